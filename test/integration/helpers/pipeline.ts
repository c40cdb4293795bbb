import { REPO_ROOT } from '../setup/env';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { Client } from '@temporalio/client';
import pg from 'pg';
import { keepValuesAsText, openPool, withClient } from '../../../src/db/client';
import { loadConfig, type AppConfig } from '../../../src/config';
import { postgresPid } from '../../../src/stack/postgres';
import { childPids, isAlive, readPid, spawnDetached, stopPid, waitFor } from '../../../src/stack/proc';
import { dropSlot } from '../../../src/cdc/source-admin';
import { CHANGE_LOG_AS_STREAMED, OracleCompare, type LayerDivergence } from './oracle-compare';
import {
  currentDeadLetterLayer,
  invalidSourceRows,
  SNAPSHOT_DEAD_LETTERS,
  oracleLayers,
  streamedDeadLetterLayer,
  type OracleInputs,
  type OracleLayer,
  type WindowRules,
} from './oracle';
import { WalAudit } from './wal-audit';
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
  // An idle connection dropped by a database restart is replaced on next use.
  readonly db = openPool({ connectionString: this.cfg.sourceUrl, max: 4 });
  private readonly oracle = new OracleCompare(this.db);

  client!: Client;
  private closeClient?: () => Promise<void>;
  /** Set by a context that audits the WAL: freshPipeline then starts a WalAudit for each pipeline. */
  walAudit = false;
  audit?: WalAudit;
  /** The test pipeline's plugin and window rules (its input, or the documented defaults). */
  plugin: 'pgoutput' | 'wal2json' = this.cfg.decodingPlugin;
  private rules: WindowRules = {
    timeZone: this.cfg.timeZone,
    closeGraceMinutes: 30,
    allowedLatenessMinutes: 10,
  };
  /** Dead letters the snapshot must write: the invalid source rows when freshPipeline started the pipeline. */
  private snapshotDeadLetters?: string;

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

  /**
   * Stops any earlier test pipeline, empties source and sink, and starts a new pipeline (snapshot of what exists).
   * Before the start it records the invalid seed rows (the snapshot's dead letters) and, with walAudit, starts
   * the WAL audit, so the audit sees exactly the changes the pipeline streams.
   */
  async freshPipeline(input: Record<string, unknown> = {}, seed?: () => Promise<void>): Promise<void> {
    await this.dropAudit();
    await resetEverything(this.cfg, this.client, PIPELINE_ID);
    if (seed) await seed();
    const full = {
      pipelineId: PIPELINE_ID,
      // Days close when the segment that saw them ends: the shortest segment the input allows keeps the oracle's
      // settle wait short.
      segmentSeconds: 5,
      batchDelayMs: 50,
      dwsRefreshMs: 300,
      ...input,
    };
    this.plugin = (input.plugin as 'pgoutput' | 'wal2json' | undefined) ?? this.cfg.decodingPlugin;
    this.rules = {
      timeZone: (input.timeZone as string | undefined) ?? this.cfg.timeZone,
      closeGraceMinutes: (input.closeGraceMinutes as number | undefined) ?? 30,
      allowedLatenessMinutes: (input.allowedLatenessMinutes as number | undefined) ?? 10,
    };
    assert.match(this.rules.timeZone, /^[A-Za-z0-9_/+-]+$/, 'time zone name the oracle can quote');
    const invalid = await this.q(
      `SELECT table_name, record_key, raw_row, reason FROM (${invalidSourceRows(false)}) i`,
    );
    this.snapshotDeadLetters = JSON.stringify(invalid);
    if (this.walAudit) await this.startAudit();
    await startPipeline(this.cfg, this.client, full);
    await waitStreaming(this.cfg, PIPELINE_ID, 60000);
  }

  /**
   * Starts a WAL audit for a pipeline about to start (after its seed rows, before its slot) with `plugin`; for
   * pipelines started without freshPipeline. The caller drops it with dropAudit.
   */
  async startAudit(plugin = this.plugin): Promise<void> {
    await this.dropAudit();
    this.plugin = plugin;
    this.audit = await WalAudit.start(this.db, plugin);
  }

  /**
   * For a pipeline whose (re)snapshot ran while a load wrote: which invalid rows its snapshot saw cannot be known in
   * advance, so its snapshot dead letters are not compared; each invalid row's latest dead letter still is.
   */
  snapshotUnderLoad(): void {
    this.snapshotDeadLetters = undefined;
  }

  /** Drops the WAL audit's slot and table, if this context started one. */
  async dropAudit(): Promise<void> {
    await this.audit?.drop();
    this.audit = undefined;
  }

  /** What the oracle needs beyond the source rows; the streamed changes come from the WAL audit when there is one. */
  private async oracleInputs(): Promise<OracleInputs> {
    const streamed = this.audit ? await this.audit.changes() : CHANGE_LOG_AS_STREAMED;
    return { streamed, rules: this.rules, nanArrivesAsNull: this.plugin === 'wal2json' };
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
  async divergence(): Promise<LayerDivergence[]> {
    const o = await this.oracleInputs();
    return this.oracle.everyLayer(o, this.deadLetterLayers(o));
  }

  /** A few rows of each named layer that the layer misses or holds beyond the oracle (for failure notes). */
  async divergenceSamples(layerNames: string[]): Promise<string> {
    const o = await this.oracleInputs();
    const layers = this.everyOracleLayer(o);
    const out: string[] = [];
    for (const l of layers.filter((l) => layerNames.includes(l.name)))
      out.push(`${l.name}: ${await this.oracle.samples(l)}`);
    // Whether the per-user day totals behind DWS (their max is in no oracle layer) still equal DWD.
    const totals = {
      name: 'totals',
      expected: TOTALS_FROM_DWD,
      actual: `${TOTALS_KEPT} WHERE detail_rows > 0`,
    };
    out.push(`per-user totals against DWD: ${await this.oracle.samples(totals)}`);
    return out.join('; ');
  }

  /** Every layer the oracle checks, as assertConverged compares them. */
  private everyOracleLayer(o: OracleInputs): OracleLayer[] {
    return [...oracleLayers(o), currentDeadLetterLayer(o), ...this.deadLetterLayers(o)];
  }

  /** Dead letters beyond the latest per row: the stream's exactly, the snapshot's when this context recorded its seed. */
  private deadLetterLayers(o: OracleInputs): OracleLayer[] {
    const layers = [streamedDeadLetterLayer(o, !!this.audit)];
    if (this.snapshotDeadLetters !== undefined)
      layers.push({
        name: 'stategrid_dead_letter (snapshot)',
        expected: `SELECT table_name, record_key, raw_row, reason FROM jsonb_to_recordset('${this.snapshotDeadLetters.replace(/'/g, "''")}'::jsonb)
          AS x(table_name text, record_key text, raw_row jsonb, reason text)`,
        actual: SNAPSHOT_DEAD_LETTERS,
      });
    return layers;
  }

  /**
   * assertConverged for a pipeline with its own sink URL. A sink in the source database gets the whole oracle
   * (is_final, windows, dead letters, ODS metadata, the WAL audit if any); for a sink in another database the
   * oracle runs on the source and the layers (without is_final) are read on the sink.
   */
  async assertConvergedWithSink(sinkUrl: string): Promise<void> {
    if (sinkUrl === this.cfg.sourceUrl) return this.assertConverged();
    const rowsOf = async (c: pg.ClientBase | pg.Pool, query: string) =>
      (await c.query<{ r: string }>(`SELECT (x.*)::text AS r FROM (${query}) x ORDER BY 1`)).rows.map(
        (r) => r.r,
      );
    await withClient(sinkUrl, async (sink) => {
      for (const l of oracleLayers(null))
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

  /**
   * Every layer equals what the semantics of docs/data-semantics.md compute directly on the source tables: ODS,
   * DWD, DWS with is_final, the window table, dead letters and ODS metadata; with a WAL audit, the change log
   * equals the changes the source committed. Day closes may still be settling: `settleMs` (60 s) bounds the wait.
   */
  async assertConverged(opts: { settleMs?: number } = {}): Promise<void> {
    const o = await this.oracleInputs();
    const layers = this.everyOracleLayer(o);
    for (const d of await this.oracle.everyLayer(o, this.deadLetterLayers(o), opts.settleMs)) {
      if (!d.missing && !d.extra) continue;
      const l = layers.find((l) => l.name === d.layer);
      assert.fail(
        `${d.layer} differs from the oracle: ${l ? await this.oracle.samples(l) : JSON.stringify(d)}`,
      );
    }
    await this.audit?.assertMatchesChangeLog();
  }
}

/**
 * A worker of its own with `env` (other roles, sink URL, task queue), its home being env.STATEGRID_HOME, started as
 * an operator starts one: `stategrid worker`, which runs the worker in a child process. Resolves once that child
 * polls, with the pid of the command (the caller stops it with stopPid) and of its worker process.
 */
export async function spawnWorker(
  env: NodeJS.ProcessEnv,
): Promise<{ pid: number; workerPid: number; logFile: string }> {
  const home = env.STATEGRID_HOME;
  if (!home) throw new Error('spawnWorker needs STATEGRID_HOME');
  fs.mkdirSync(path.join(home, 'logs'), { recursive: true });
  const logFile = path.join(home, 'logs', 'worker.log');
  const pid = spawnDetached(process.execPath, [path.join(REPO_ROOT, 'bin', 'stategrid.js'), 'worker'], {
    logFile,
    env,
  });
  const workerPid = await commandWorker(pid, home, () => `see ${logFile}`, 120000);
  return { pid, workerPid, logFile };
}

/**
 * The pid of the worker process `stategrid worker` (pid `command`, home `home`) runs, once it polls: the pid in its
 * ready file, a child of the command (a stale file names another). `output` says where the command's output is.
 */
export async function commandWorker(
  command: number,
  home: string,
  output: () => string,
  timeoutMs: number,
): Promise<number> {
  let workerPid = 0;
  await waitFor(
    `the worker of stategrid worker in ${home} to poll`,
    async () => {
      if (!isAlive(command)) throw new Error(`stategrid worker exited at start; ${output()}`);
      workerPid = readPid(path.join(home, 'run', 'worker.ready')) ?? 0;
      return childPids(command).includes(workerPid);
    },
    timeoutMs,
  );
  return workerPid;
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
 * test pipeline is terminated and the context closed. With `walAudit`, each freshPipeline starts a WAL audit, and
 * each test drops it at its end.
 */
export function pipelineTestContext(
  cleanup?: (t: TestContext) => Promise<unknown>,
  options: { walAudit?: boolean } = {},
): TestContext {
  const t = new TestContext();
  t.walAudit = !!options.walAudit;
  before(() => t.open());
  afterEach(() => t.dropAudit());
  after(async () => {
    await t.terminatePipeline();
    await cleanup?.(t);
    await t.close();
  });
  return t;
}

/**
 * A TestContext for a `describe` whose pipeline `pipelineId` runs on a worker process of its own: opened before its
 * tests; afterwards that pipeline is terminated, the worker `spawn` started is stopped, the pipeline's slot dropped
 * and the context closed.
 */
export function ownWorkerTestContext(pipelineId: string): {
  t: TestContext;
  spawn(env: NodeJS.ProcessEnv): ReturnType<typeof spawnWorker>;
} {
  const t = new TestContext();
  let workerPid: number | undefined;
  before(() => t.open());
  after(async () => {
    await terminatePipeline(t.client, pipelineId, 'test done');
    if (workerPid) await stopPid(workerPid, 20000);
    await dropSlot(t.cfg.sourceUrl, `stategrid_${pipelineId}`);
    await t.close();
  });
  const spawn = async (env: NodeJS.ProcessEnv) => {
    const worker = await spawnWorker(env);
    workerPid = worker.pid;
    return worker;
  };
  return { t, spawn };
}

/**
 * Crashes the embedded cluster of `cfg`: SIGKILL to the postmaster and every backend at once, so nothing shuts down
 * cleanly and the next start runs crash recovery.
 */
export function crashPostgres(cfg: AppConfig): void {
  const postmaster = postgresPid(cfg);
  if (!postmaster) throw new Error(`PostgreSQL crash: no postmaster running for ${cfg.home}`);
  for (const pid of [postmaster, ...childPids(postmaster)]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      // A backend that ended between the listing and the kill.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}
