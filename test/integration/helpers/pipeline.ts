import { REPO_ROOT } from '../setup/env';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { Client } from '@temporalio/client';
import pg from 'pg';
import { keepValuesAsText } from '../../../src/db/client';
import { loadConfig, type AppConfig } from '../../../src/config';
import { withClient } from '../../../src/db/client';
import { workerEntry } from '../../../src/stack';
import { readPid, spawnDetached, waitFor } from '../../../src/stack/proc';
import {
  resetEverything,
  startPipeline,
  temporalClient,
  terminatePipeline,
  waitCaughtUp,
  waitStreaming,
} from '../../../src/control/pipeline';

/** Shared helpers for integration tests against the real stack: fresh pipeline, oracle queries, convergence. */
export const PIPELINE_ID = 'test';

// Per-user day totals from scratch, and the incrementally kept table, in the same column order.
const TOTALS_FROM_DWD = `SELECT consumption_date::date AS stat_date, region_id, user_id, region_name, user_name,
    sum(consumption_amount), sum(consumption_cost), count(*), max(consumption_amount)
  FROM dwd_power_consumption_detail WHERE region_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5`;
const TOTALS_KEPT = `SELECT stat_date, region_id, user_id, region_name, user_name, total_consumption, total_cost,
    detail_rows, max_consumption FROM dws_user_day_total`;

keepValuesAsText();

export class TestContext {
  readonly cfg: AppConfig = loadConfig();
  readonly db = new pg.Pool({ connectionString: this.cfg.sourceUrl, max: 4 });

  constructor() {
    // An idle connection dropped by a database restart is replaced on next use; unheard it would crash the run.
    this.db.on('error', () => undefined);
  }
  client!: Client;
  private closeClient?: () => Promise<void>;

  async open(): Promise<this> {
    const t = await temporalClient(this.cfg);
    this.client = t.client;
    this.closeClient = t.close;
    return this;
  }

  async close(): Promise<void> {
    await this.db.end();
    await this.closeClient?.();
  }

  async q<T extends pg.QueryResultRow = Record<string, unknown>>(
    sql: string,
    params: unknown[] = [],
  ): Promise<T[]> {
    return (await this.db.query<T>(sql, params)).rows;
  }

  /** Stops any earlier test pipeline, empties source and sink, and starts a new pipeline (snapshot of what exists). */
  async freshPipeline(input: Record<string, unknown> = {}, seed?: () => Promise<void>): Promise<void> {
    await resetEverything(this.cfg, this.client, PIPELINE_ID);
    if (seed) await seed();
    await startPipeline(this.cfg, this.client, {
      pipelineId: PIPELINE_ID,
      segmentSeconds: 15,
      batchDelayMs: 50,
      dwsRefreshMs: 300,
      ...input,
    });
    await waitStreaming(this.cfg, PIPELINE_ID, 60000);
  }

  /**
   * A fresh pipeline over 200 users (regions 1-4) and 30,000 consumptions on `days[0]` from its snapshot, then 5,000
   * consumptions (ids 30001-35000) on `days[1]` streamed. Consumptions of users 201-220 have no user (orphans).
   */
  async twoDaysOfConsumptions(days: [string, string]): Promise<void> {
    await this.freshPipeline({}, async () => {
      await this
        .q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 4, 'r' || (1 + g % 4), now()
        FROM generate_series(1, 200) g`);
      await this
        .q(`INSERT INTO power_consumption SELECT g, 1 + g % 220, (g % 500) / 100.0, 0.5, '${days[0]} 08:00:00'
        FROM generate_series(1, 30000) g`);
    });
    await this.q(`INSERT INTO power_consumption SELECT g, 1 + g % 220, 1.25, 0.5, '${days[1]} 09:00:00'
      FROM generate_series(30001, 35000) g`);
  }

  terminatePipeline(): Promise<void> {
    return terminatePipeline(this.client, PIPELINE_ID, 'test reset');
  }

  async waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  async caughtUp(timeoutMs = 90000): Promise<void> {
    assert.ok(
      await waitCaughtUp(this.cfg, PIPELINE_ID, timeoutMs),
      'pipeline did not catch up (stategrid wait)',
    );
  }

  /** Rows in `a` not in `b` plus rows in `b` not in `a`. */
  async diff(a: string, b: string): Promise<number> {
    const rows = await this.q<{ n: string }>(
      `SELECT count(*) AS n FROM ((${a} EXCEPT ALL ${b}) UNION ALL (${b} EXCEPT ALL ${a})) d`,
    );
    return Number(rows[0].n);
  }

  /** Per layer: oracle rows missing from the layer, and layer rows the oracle does not have. */
  async divergence(): Promise<{ layer: string; missing: number; extra: number }[]> {
    const out = [];
    for (const l of LAYERS) {
      const rows = await this.q<{ missing: string; extra: string }>(
        `SELECT (SELECT count(*) FROM (${l.expected} EXCEPT ALL ${l.actual}) m) AS missing,
           (SELECT count(*) FROM (${l.actual} EXCEPT ALL ${l.expected}) x) AS extra`,
      );
      out.push({ layer: l.name, missing: Number(rows[0].missing), extra: Number(rows[0].extra) });
    }
    return out;
  }

  /** assertConverged for a sink in another database: the oracle runs on the source, the layers on the sink. */
  async assertConvergedWithSink(sinkUrl: string): Promise<void> {
    const rowsOf = async (c: pg.ClientBase | pg.Pool, query: string) =>
      (await c.query<{ r: string }>(`SELECT (x.*)::text AS r FROM (${query}) x ORDER BY 1`)).rows.map(
        (r) => r.r,
      );
    await withClient(sinkUrl, async (sink) => {
      for (const l of LAYERS)
        assert.deepEqual(
          await rowsOf(sink, l.actual),
          await rowsOf(this.db, l.expected),
          `${l.name} differs from source`,
        );
    });
  }

  /**
   * The change log against the source's consumptions with ids from `fromId` (the streamed ones): how many there
   * are, how many have no insert logged, how many have more than one, and how many inserts are logged in all.
   */
  async insertsInChangeLog(
    fromId: number,
  ): Promise<{ streamed: number; lost: number; duplicated: number; logged: number }> {
    const rows = await this.q<{ streamed: number; lost: number; duplicated: number; logged: number }>(
      `WITH src AS (SELECT consumption_id AS id FROM power_consumption WHERE consumption_id >= $1),
         log AS (SELECT (row_data->>'consumption_id')::bigint AS id, count(*) AS n FROM ods_change_log
           WHERE table_name = 'power_consumption' AND op = 'I' GROUP BY 1)
       SELECT (SELECT count(*) FROM src)::int AS streamed,
         (SELECT count(*) FROM src WHERE NOT EXISTS (SELECT 1 FROM log WHERE log.id = src.id))::int AS lost,
         (SELECT count(*) FROM log WHERE n > 1)::int AS duplicated, (SELECT count(*) FROM log)::int AS logged`,
      [fromId],
    );
    return rows[0];
  }

  /**
   * The incremental DWS state is exact and nothing is pending: the per-user day totals equal a from-scratch
   * aggregation of DWD, no delta and no rebuild mark is left (call once caught up).
   */
  async assertTotalsExact(): Promise<void> {
    assert.equal(await this.diff(TOTALS_FROM_DWD, TOTALS_KEPT), 0, 'per-user totals differ from DWD');
    const [pending] = await this.q<{ deltas: number; marks: number }>(
      `SELECT (SELECT count(*) FROM stategrid_dws_delta)::int AS deltas,
         (SELECT count(*) FROM stategrid_dws_dirty)::int AS marks`,
    );
    assert.deepEqual(pending, { deltas: 0, marks: 0 }, 'deltas or rebuild marks left behind');
  }

  /** Every layer equals what the semantics of docs/data-semantics.md compute directly on the source tables. */
  async assertConverged(): Promise<void> {
    for (const l of LAYERS)
      assert.equal(await this.diff(l.expected, l.actual), 0, `${l.name} differs from source`);
  }
}

/**
 * A worker process of its own with `env` (other roles, sink URL, task queue), its home being env.STATEGRID_HOME;
 * resolves once it polls. The caller stops it with stopPid.
 */
export async function spawnWorker(env: NodeJS.ProcessEnv): Promise<{ pid: number; logFile: string }> {
  const home = env.STATEGRID_HOME;
  if (!home) throw new Error('spawnWorker needs STATEGRID_HOME');
  fs.mkdirSync(path.join(home, 'logs'), { recursive: true });
  const logFile = path.join(home, 'logs', 'worker.log');
  const pid = spawnDetached(process.execPath, [workerEntry()], { logFile, env });
  await waitFor(
    `the worker in ${home} to poll`,
    async () => readPid(path.join(home, 'run', 'worker.ready')) === pid,
    120000,
  );
  return { pid, logFile };
}

/** The `stategrid` CLI as an operator runs it, in the test's environment. */
export function runStategrid(args: string[], timeoutMs = 120000): SpawnSyncReturns<string> {
  return runStategridIn(process.env, args, timeoutMs);
}

/** The same in another environment (another home, another Temporal). */
export function runStategridIn(
  env: NodeJS.ProcessEnv,
  args: string[],
  timeoutMs = 120000,
): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'stategrid.js'), ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    env,
  });
}

/**
 * A TestContext for the enclosing `describe`: opened before its tests; afterwards `cleanup` (if any) runs, then the
 * test pipeline is terminated and the context closed.
 */
export function pipelineTestContext(cleanup?: (t: TestContext) => Promise<unknown>): TestContext {
  const t = new TestContext();
  before(() => t.open());
  after(async () => {
    await t.terminatePipeline();
    await cleanup?.(t);
    await t.close();
  });
  return t;
}

// The oracle: docs/data-semantics.md semantics written directly against the source tables (blank = only white space, as
// Unicode and String.prototype.trim define it, so a name of ideographic spaces is blank too).
const VALID_USERS = `(SELECT * FROM power_user WHERE user_name !~ '^[\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*$' AND region_id IS NOT NULL
  AND region_name IS NOT NULL)`;
const VALID_DETAIL = `(SELECT c.consumption_id, c.user_id, u.user_name, c.consumption_amount, c.consumption_cost,
    c.consumption_date, u.region_id, u.region_name, u.usage_type
  FROM power_consumption c LEFT JOIN ${VALID_USERS} u ON u.user_id = c.user_id
  WHERE c.user_id IS NOT NULL AND c.consumption_date IS NOT NULL AND c.consumption_amount >= 0
    AND c.consumption_cost >= 0 AND c.consumption_amount <> 'NaN' AND c.consumption_cost <> 'NaN')`;

const ODS_USERS_EXPECTED = `SELECT user_id, user_name, usage_type, region_id, region_name, update_time FROM power_user`;
const ODS_USERS_ACTUAL = `SELECT user_id, user_name, usage_type, region_id, region_name, update_time FROM ods_power_user`;
const ODS_CONSUMPTION_EXPECTED = `SELECT consumption_id, user_id, consumption_amount, consumption_cost,
  consumption_date FROM power_consumption`;
const ODS_CONSUMPTION_ACTUAL = ODS_CONSUMPTION_EXPECTED.replace('power_consumption', 'ods_power_consumption');
const DWD_USER_EXPECTED = `SELECT user_id, user_name, usage_type, region_id, region_name, update_time
  FROM ${VALID_USERS} v`;
const DWD_USER_ACTUAL = `SELECT user_id, user_name, usage_type, region_id, region_name, update_time
  FROM dwd_power_user_info`;
const DWD_DETAIL_EXPECTED = `SELECT * FROM ${VALID_DETAIL} d`;
const DWD_DETAIL_ACTUAL = `SELECT consumption_id, user_id, user_name, consumption_amount, consumption_cost,
  consumption_date, region_id, region_name, usage_type FROM dwd_power_consumption_detail`;
const DWS_STATS_EXPECTED = `SELECT region_id, region_name, consumption_date::date AS stat_date,
    sum(consumption_amount)::numeric(20,2), sum(consumption_cost)::numeric(20,2), count(DISTINCT user_id),
    max(consumption_amount)
  FROM ${VALID_DETAIL} d WHERE region_id IS NOT NULL GROUP BY 1, 2, 3`;
const DWS_STATS_ACTUAL = `SELECT region_id, region_name, stat_date, total_consumption, total_cost, user_count,
  max_consumption FROM dws_region_daily_stats`;
const DWS_RANKING_EXPECTED = `SELECT consumption_date::date, user_id, user_name, region_id, region_name,
    sum(consumption_amount)::numeric(20,2), sum(consumption_cost)::numeric(20,2),
    row_number() OVER (PARTITION BY consumption_date::date, region_id
      ORDER BY sum(consumption_amount) DESC, user_id)::int
  FROM ${VALID_DETAIL} d WHERE region_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5`;
const DWS_RANKING_ACTUAL = `SELECT stat_date, user_id, user_name, region_id, region_name, total_consumption,
  total_cost, ranking FROM dws_user_ranking`;

const LAYERS = [
  { name: 'ods_power_user', expected: ODS_USERS_EXPECTED, actual: ODS_USERS_ACTUAL },
  { name: 'ods_power_consumption', expected: ODS_CONSUMPTION_EXPECTED, actual: ODS_CONSUMPTION_ACTUAL },
  { name: 'dwd_power_user_info', expected: DWD_USER_EXPECTED, actual: DWD_USER_ACTUAL },
  { name: 'dwd_power_consumption_detail', expected: DWD_DETAIL_EXPECTED, actual: DWD_DETAIL_ACTUAL },
  { name: 'dws_region_daily_stats', expected: DWS_STATS_EXPECTED, actual: DWS_STATS_ACTUAL },
  { name: 'dws_user_ranking', expected: DWS_RANKING_EXPECTED, actual: DWS_RANKING_ACTUAL },
];
