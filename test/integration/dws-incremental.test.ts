import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { openPool, withClient } from '../../src/db/client';
import { refreshDirtyPartitions } from '../../src/sink/aggregates';
import { MARK_ALL_DIRTY } from '../../src/sink/dwd';
import { NO_JIT, REBUILD_TOTALS } from '../../src/sink/dws';
import { TOP_USERS_LATEST_DAY } from '../../src/sink/reports';
import { stackUp } from '../../src/stack';
import { readPid } from '../../src/stack/proc';
import type { RecomputeResult } from '../../src/workflows/contract';
import { metricValue, scrapeMetrics } from './helpers/metrics';
import { PIPELINE_ID, pipelineTestContext } from './helpers/pipeline';

/**
 * DWS maintained by deltas (docs/architecture.md, DWS refresher): under updates, deletes, region moves, renames,
 * day moves, ties and late events, the per-user day totals equal a from-scratch aggregation of DWD, both DWS
 * tables equal the oracle, no delta is left behind, and a recompute of every day finds no drift.
 */
const DAY0 = '2026-10-04';
const DAY1 = '2026-10-05';
const DAY2 = '2026-10-06';

describe('incremental DWS', function () {
  this.timeout(180000);
  const t = pipelineTestContext();

  const recompute = (date: string) =>
    t.client.workflow.execute('dailyRecomputeWorkflow', {
      taskQueue: t.cfg.taskQueue,
      workflowId: `test-recompute-${date}-${Date.now()}`,
      args: [{ date, pipelineId: PIPELINE_ID }],
    }) as Promise<RecomputeResult>;

  /** Caught up: every layer equals the oracle, the totals equal DWD, nothing pending, recomputes find no drift. */
  async function assertExact(days: string[]): Promise<void> {
    await t.caughtUp();
    await t.assertConverged();
    await t.assertTotalsExact();
    for (const day of days) assert.equal((await recompute(day)).drift, 0, `drift on ${day}`);
  }

  it('stays exact under updates, deletes, region moves, renames, day moves and ties', async () => {
    // Small chunks: the fanned-out snapshot loads the consumptions in several chunks, four at a time.
    await t.freshPipeline({ snapshotChunkRows: 100 }, async () => {
      await t.q(`INSERT INTO power_user VALUES (1, 'u1', '居民用电', 1, 'r1', now()),
        (2, 'u2', '居民用电', 1, 'r1', now()), (3, 'u3', '商业用电', 1, 'r1', now()),
        (4, 'u4', '商业用电', 2, 'r2', now()), (5, 'u5', '工业用电', 2, 'r2', now()),
        (6, 'u6', '工业用电', 2, 'r2', now())`);
      await t.q(
        `INSERT INTO power_consumption SELECT g, 1 + g % 6, 1.00 + (g % 7), 0.50, $1::date + g * interval '30 minutes'
        FROM generate_series(1, 40) g`,
        [DAY1],
      );
      await t.q(
        `INSERT INTO power_consumption SELECT 1000 + g, 1 + g % 6, 0.50 + (g % 11), 0.25, $1::date + g * interval '3 minutes'
        FROM generate_series(0, 449) g`,
        [DAY1],
      );
      // A second day in the snapshot: its totals are rebuilt on a second connection beside DAY1's.
      await t.q(
        `INSERT INTO power_consumption SELECT 2000 + g, 1 + g % 6, 2.00 + (g % 5), 0.75, $1::date + g * interval '1 hour'
        FROM generate_series(0, 23) g`,
        [DAY0],
      );
    });
    // The snapshot fills the totals from DWD (dirty marks of every chunk, not deltas).
    await assertExact([DAY0, DAY1, DAY2]);
    const chunks = await t.q<{ n: number }>(
      `SELECT count(*)::int AS n FROM stategrid_snapshot_chunk WHERE table_name = 'power_consumption'`,
    );
    assert.ok(chunks[0].n > 1, 'the consumptions were loaded in several chunks');

    // Inserts, and a tie in region 1 on DAY2: users 1 and 2 both at 12.00, ranked by user_id.
    await t.q(`INSERT INTO power_consumption VALUES (101, 1, 5.00, 1.00, '${DAY2} 01:00'),
      (102, 1, 7.00, 1.00, '${DAY2} 02:00'), (103, 2, 12.00, 2.00, '${DAY2} 03:00'),
      (104, 3, 9.50, 3.00, '${DAY2} 04:00'), (105, 3, 2.00, 1.00, '${DAY2} 05:00'),
      (106, 4, 8.00, 1.00, '${DAY2} 06:00'), (107, 4, 3.00, 1.00, '${DAY2} 07:00'),
      (108, 5, 4.00, 1.00, '${DAY2} 08:00'), (109, 6, 6.00, 1.00, '${DAY2} 09:00')`);
    await assertExact([DAY1, DAY2]);
    const tie = await t.q(`SELECT user_id::int, ranking FROM dws_user_ranking
      WHERE stat_date = '${DAY2}' AND region_id = 1 AND user_id IN (1, 2) ORDER BY ranking`);
    assert.deepEqual(tie, [
      { user_id: 1, ranking: 1 },
      { user_id: 2, ranking: 2 },
    ]);
    // The demo's top users of the latest day: DAY2, the same rows as the ranking of that day.
    const top = await t.q(TOP_USERS_LATEST_DAY, [2]);
    const rankedDay2 = await t.q(`SELECT stat_date::text, region_name, ranking, user_id, user_name,
      total_consumption, total_cost, is_final FROM dws_user_ranking
      WHERE stat_date = '${DAY2}' AND ranking <= 2 ORDER BY region_id, ranking`);
    assert.equal(rankedDay2.length, 4);
    assert.deepEqual(top, rankedDay2);

    // The max row of user 3 shrinks, user 4's max row goes, a cost-only update, a day move, and a row that turns
    // invalid, each in its own transaction.
    await t.q(`UPDATE power_consumption SET consumption_amount = 1.00 WHERE consumption_id = 104`);
    await t.q(`DELETE FROM power_consumption WHERE consumption_id = 106`);
    await t.q(`UPDATE power_consumption SET consumption_cost = 9.99 WHERE consumption_id = 109`);
    await t.q(`UPDATE power_consumption SET consumption_date = '${DAY1} 23:00' WHERE consumption_id = 105`);
    await t.q(`UPDATE power_consumption SET consumption_amount = -1 WHERE consumption_id = 108`);
    await assertExact([DAY1, DAY2]);
    const shrunk = await t.q(`SELECT max_consumption::text AS m FROM dws_user_day_total
      WHERE stat_date = '${DAY2}' AND user_id = 3`);
    assert.deepEqual(shrunk, [{ m: '1.00' }]);

    // Region move and rename of users with rows on both days, a user deleted (its rows become orphans) and
    // inserted again, and several of these in one transaction with consumption changes.
    await t.q(`UPDATE power_user SET region_id = 2, region_name = 'r2' WHERE user_id = 2`);
    await t.q(`UPDATE power_user SET user_name = 'u5-renamed' WHERE user_id = 5`);
    await t.q(`DELETE FROM power_user WHERE user_id = 6`);
    await assertExact([DAY1, DAY2]);
    await t.q(`BEGIN;
      INSERT INTO power_user VALUES (6, 'u6', '工业用电', 1, 'r1', now());
      UPDATE power_consumption SET consumption_amount = consumption_amount + 1 WHERE user_id = 6;
      UPDATE power_user SET region_id = 1, region_name = 'r1' WHERE user_id = 4;
      DELETE FROM power_consumption WHERE consumption_id = 107;
      COMMIT`);
    await assertExact([DAY1, DAY2]);
  });

  it('takes late corrections to a closed day in one revision per partition and refresh', async () => {
    // An event of DAY2 at noon moves the watermark past DAY1's end: DAY1 closes.
    await t.q(`INSERT INTO power_consumption VALUES (200, 1, 1.00, 1.00, '${DAY2} 12:00')`);
    await t.waitFor(
      `${DAY1} closed`,
      async () =>
        (await t.q(`SELECT 1 FROM stategrid_window WHERE stat_date = $1 AND is_final`, [DAY1])).length === 1,
    );
    await assertExact([DAY1, DAY2]);
    const before = await lateFigures();

    // Holding the DWS lock keeps refreshes waiting while ten late transactions reach DWD; the first refresh
    // after it takes all of them.
    const holder = new pg.Client({ connectionString: t.cfg.sinkUrl });
    await holder.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock(hashtext('stategrid_dws'))`);
      for (let i = 0; i < 10; i++)
        await t.q(`INSERT INTO power_consumption VALUES ($1, 1, 2.00, 1.00, '${DAY1} 10:00')`, [300 + i]);
      await t.waitFor(
        'late rows in DWD',
        async () =>
          (await t.q(`SELECT 1 FROM dwd_power_consumption_detail WHERE consumption_id BETWEEN 300 AND 309`))
            .length === 10,
      );
    } finally {
      await holder.query(`SELECT pg_advisory_unlock(hashtext('stategrid_dws'))`);
      await holder.end();
    }
    await assertExact([DAY1, DAY2]);
    const after = await lateFigures();
    assert.equal(after.revisions - before.revisions, 1, 'one revision of the partition');
    assert.equal(after.lateEvents - before.lateEvents, 10, 'ten late rows');
    const final = await t.q(`SELECT DISTINCT is_final FROM dws_region_daily_stats WHERE stat_date = $1`, [
      DAY1,
    ]);
    assert.deepEqual(final, [{ is_final: true }]);
  });

  it('keeps a max exact when its row enters and leaves a new total or region row within one refresh', async () => {
    // Region 9 has no row on DAY2 yet. While refreshes wait, user 20's 99.60 enters region 9 and leaves it with
    // its user, and user 21's 88.00 enters a total of its own and shrinks to 1.00, each step in a batch of its own
    // (a batch keeps only each key's last state); the refresh after takes all of it at once, so neither the new
    // total nor the new region row may keep a max that only passed through.
    const inDwd = (label: string, where: string) =>
      t.waitFor(
        label,
        async () => (await t.q(`SELECT 1 FROM dwd_power_consumption_detail WHERE ${where}`)).length > 0,
      );
    const holder = new pg.Client({ connectionString: t.cfg.sinkUrl });
    await holder.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock(hashtext('stategrid_dws'))`);
      await t.q(`BEGIN;
        INSERT INTO power_user VALUES (20, 'u20', '居民用电', 9, 'r9', now()), (21, 'u21', '居民用电', 9, 'r9', now());
        INSERT INTO power_consumption VALUES (500, 20, 99.60, 1.00, '${DAY2} 14:00'),
          (501, 21, 5.00, 1.00, '${DAY2} 14:10'), (502, 21, 88.00, 1.00, '${DAY2} 14:20');
        COMMIT`);
      await inDwd('the rows in DWD', 'consumption_id = 502');
      await t.q(`UPDATE power_user SET region_id = 8, region_name = 'r8' WHERE user_id = 20`);
      await inDwd('user 20 moved in DWD', 'consumption_id = 500 AND region_id = 8');
      await t.q(`UPDATE power_consumption SET consumption_amount = 1.00 WHERE consumption_id = 502`);
      await inDwd('the shrunk row in DWD', 'consumption_id = 502 AND consumption_amount = 1.00');
    } finally {
      await holder.query(`SELECT pg_advisory_unlock(hashtext('stategrid_dws'))`);
      await holder.end();
    }
    await assertExact([DAY2]);
    const maxes = await t.q(`SELECT region_id::int, max_consumption::text AS m FROM dws_region_daily_stats
      WHERE stat_date = '${DAY2}' AND region_id IN (8, 9) ORDER BY region_id`);
    assert.deepEqual(maxes, [
      { region_id: 8, m: '99.60' },
      { region_id: 9, m: '5.00' },
    ]);
  });

  it('applies the deltas of a refresh whose worker was killed mid-transaction exactly once', async () => {
    const before = await lateFigures();
    // A share lock on the stats table lets a refresh take and apply the deltas, then stops it where it writes
    // the stats: the refresh transaction is open with the deltas applied and not committed.
    const blocker = new pg.Client({ connectionString: t.cfg.sinkUrl });
    await blocker.connect();
    let blockedPid = 0;
    try {
      await blocker.query(`BEGIN; LOCK TABLE dws_region_daily_stats IN SHARE MODE`);
      await t.q(`INSERT INTO power_consumption SELECT 400 + g, 1 + g % 6, 0.25 * g, 0.10, '${DAY1} 11:00'
        FROM generate_series(0, 4) g`);
      await t.q(`BEGIN;
        UPDATE power_consumption SET consumption_amount = consumption_amount * 2 WHERE consumption_id BETWEEN 101 AND 103;
        DELETE FROM power_consumption WHERE consumption_id = 109;
        INSERT INTO power_user VALUES (7, 'u7', '居民用电', 2, 'r2', now());
        INSERT INTO power_consumption VALUES (410, 7, 3.00, 1.00, '${DAY2} 13:00');
        COMMIT`);
      await t.waitFor('a refresh holding applied deltas, waiting to write the stats', async () => {
        blockedPid = await refreshWaitingWithDeltasApplied(blocker);
        return blockedPid > 0;
      });
      process.kill(readPid(path.join(t.cfg.home, 'run', 'worker.pid'))!, 'SIGKILL');
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
    // The killed worker's transaction rolls back: its deltas are there again for the next refresh.
    await t.waitFor('the killed refresh rolled back', async () => {
      const gone = await t.q(`SELECT 1 FROM pg_stat_activity WHERE pid = $1`, [blockedPid]);
      return gone.length === 0;
    });
    const pending = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM stategrid_dws_delta`);
    assert.ok(pending[0].n > 0, 'the deltas the killed refresh had applied are pending again');

    await stackUp(t.cfg, () => undefined);
    await assertExact([DAY1, DAY2]);
    const after = await lateFigures();
    assert.equal(after.lateEvents - before.lateEvents, 5, 'each late row counted once');
  });

  it('rebuilds from DWD the partitions whose deltas a crash emptied (the delta table is unlogged)', async () => {
    await t.twoDaysOfConsumptions([DAY1, DAY2]);
    await t.caughtUp();
    const lostSeries = `stategrid_dws_lost_delta_partitions_total{pipeline="${PIPELINE_ID}"}`;
    const lostBefore = metricValue(await scrapeMetrics(t.cfg), lostSeries);
    let lostParts = 0;
    // Refreshes held back (the DWS lock), so the deltas of the batches below stay pending.
    const holder = new pg.Client({ connectionString: t.cfg.sinkUrl });
    await holder.connect();
    try {
      await holder.query(`BEGIN; SELECT pg_advisory_xact_lock(hashtext('stategrid_dws'))`);
      await t.q(`INSERT INTO power_consumption SELECT 40000 + g, 1 + g % 6, 0.75 * g, 0.30, '${DAY1} 12:00'
        FROM generate_series(1, 20) g`);
      await t.q(`BEGIN;
        UPDATE power_consumption SET consumption_amount = consumption_amount + 5 WHERE consumption_id % 5 = 0;
        DELETE FROM power_consumption WHERE consumption_id % 9 = 0;
        UPDATE power_user SET region_id = 2, region_name = 'r2' WHERE user_id = 4;
        COMMIT`);
      await t.waitFor('the batches committed, their deltas pending', async () => {
        const [r] = await t.q<{ ods: boolean; deltas: number }>(
          `SELECT EXISTS (SELECT 1 FROM ods_power_consumption WHERE consumption_id = 40020) AS ods,
             (SELECT count(*)::int FROM stategrid_dws_delta) AS deltas`,
        );
        const log = await t.q(`SELECT 1 FROM ods_change_log WHERE table_name = 'power_user' AND op = 'U'`);
        return r.ods && r.deltas > 0 && log.length > 0;
      });
      // What crash recovery does to unlogged tables: the deltas and the sentinel are gone, the marks are not.
      await t.q(`TRUNCATE stategrid_dws_delta, stategrid_dws_delta_intact`);
      const parts = await t.q(`SELECT DISTINCT stat_date, region_id FROM stategrid_dws_delta_parts`);
      assert.ok(parts.length > 0, 'the partitions of the lost deltas are recorded');
      lostParts = parts.length;
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
    await assertExact([DAY1, DAY2]);
    const [left] = await t.q<{ parts: number; intact: number }>(
      `SELECT (SELECT count(*)::int FROM stategrid_dws_delta_parts) AS parts,
         (SELECT count(*)::int FROM stategrid_dws_delta_intact) AS intact`,
    );
    assert.deepEqual(left, { parts: 0, intact: 1 }, 'partitions rebuilt, the sentinel back');
    const log = fs.readFileSync(path.join(t.cfg.home, 'logs', 'worker.log'), 'utf8');
    assert.match(log, /DWS deltas lost in a crash of the sink database/, 'the worker says what happened');
    const lost = metricValue(await scrapeMetrics(t.cfg), lostSeries) - lostBefore;
    assert.equal(lost, lostParts, 'and counts the partitions it rebuilt');
  });

  it('brings DWS level with DWD as soon as the sink holds everything received, not at the next interval', async () => {
    // No refresh falls due by the interval after the segment's first one: only the sink catching up starts one.
    // A day ahead of the clock, so no window close (which takes the deltas too) brings DWS level instead.
    await t.freshPipeline({ dwsRefreshMs: 600000 });
    const ahead = '2027-03-01';
    const stats = () =>
      t.q<{ total: string; users: number }>(
        `SELECT total_consumption::text AS total, user_count::int AS users FROM dws_region_daily_stats
         WHERE stat_date = $1 AND region_id = 1`,
        [ahead],
      );
    await t.q(`INSERT INTO power_user VALUES (1, 'u1', '居民用电', 1, 'r1', now())`);
    await t.q(`INSERT INTO power_consumption VALUES (1, 1, 2.50, 1.00, '${ahead} 08:00')`);
    await t.caughtUp(20000);
    assert.deepEqual(await stats(), [{ total: '2.50', users: 1 }]);
    await t.q(
      `INSERT INTO power_consumption SELECT 1 + g, 1, 1.25, 0.50, '${ahead} 09:00' FROM generate_series(1, 4) g`,
    );
    await t.caughtUp(20000);
    assert.deepEqual(await stats(), [{ total: '7.50', users: 1 }]);
    await t.assertConverged();
    await t.assertTotalsExact();
  });

  it('rebuilds the totals of empty partitions on two connections, or on one when the second cannot open', async () => {
    await t.twoDaysOfConsumptions([DAY1, DAY2]);
    await t.caughtUp();
    await t.assertConverged();
    // DWS as an initial snapshot leaves it: every partition of both days marked for a rebuild, no totals.
    const emptyTotals = () => t.q(`BEGIN; DELETE FROM dws_user_day_total; ${MARK_ALL_DIRTY}; COMMIT`);
    await emptyTotals();
    const [marked] = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM stategrid_dws_dirty`);
    assert.equal(marked.n, 8, 'two days of four regions');

    // Totals written by one transaction share its xmin: one writer, or the lock holder and its helper.
    const writers = async () =>
      (await t.q<{ n: number }>(`SELECT count(DISTINCT xmin::text)::int AS n FROM dws_user_day_total`))[0].n;
    const warnings: string[] = [];
    const warn = (message: string, fields: Record<string, unknown>) =>
      warnings.push(`${message} (${fields.err})`);
    // One pooled connection, already open, for the refresh; the second connection of the rebuild opens beside
    // the pool with its settings, which first point nowhere.
    const sink = openPool({ connectionString: t.cfg.sinkUrl, max: 1 });
    try {
      await sink.query('SELECT 1');
      sink.options.connectionString = t.cfg.sinkUrl.replace(/:\d+\//, ':1/');
      assert.equal((await refreshDirtyPartitions(sink, PIPELINE_ID, warn)).partitions, 8);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /second connection failed.*ECONNREFUSED/);
      assert.equal(await writers(), 1, 'rebuilt on one connection');
      await t.assertTotalsExact();

      sink.options.connectionString = t.cfg.sinkUrl;
      await emptyTotals();
      warnings.length = 0;
      assert.equal((await refreshDirtyPartitions(sink, PIPELINE_ID, warn)).partitions, 8);
      assert.deepEqual(warnings, []);
      assert.equal(await writers(), 2, 'rebuilt on two connections');
    } finally {
      await sink.end();
    }
    await t.assertTotalsExact();
    await t.assertConverged();
  });

  it('checks a day the statistics have not seen for drift without a nested loop between totals', async () => {
    // A window close right after a day filled: the planner estimates that day's current and fresh totals at one
    // row each. Joined as such, 20,000 totals were compared 400,000,000 times (47 s).
    const day = '2027-01-15';
    const plan = await withClient(t.cfg.sinkUrl, async (c) => {
      await c.query('BEGIN');
      try {
        await c.query(NO_JIT);
        await c.query('ANALYZE dwd_power_consumption_detail; ANALYZE dws_user_day_total');
        await c.query(`INSERT INTO dwd_power_consumption_detail (consumption_id, user_id, user_name, consumption_amount,
            consumption_cost, consumption_date, region_id, region_name, usage_type)
          SELECT 900000 + g, g % 2000, 'u' || g % 2000, 1.00, 0.50, '${day} 08:00', 1 + g % 4, 'r' || 1 + g % 4, 'x'
          FROM generate_series(1, 4000) g`);
        await c.query(`INSERT INTO dws_user_day_total (stat_date, region_id, user_id, region_name, user_name,
            total_consumption, total_cost, detail_rows, max_consumption)
          SELECT '${day}', 1 + u % 4, u, 'r' || 1 + u % 4, 'u' || u, 2.00, 1.00, 2, 1.00 FROM generate_series(0, 1999) u`);
        const regions = [1, 2, 3, 4];
        const { rows } = await c.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
          `EXPLAIN (FORMAT JSON) ${REBUILD_TOTALS}`,
          [regions.map(() => day), regions, [day], regions],
        );
        return rows[0]['QUERY PLAN'][0].Plan;
      } finally {
        await c.query('ROLLBACK');
      }
    });
    const totalsSets = new Set(['current', 'fresh', 'incremental', 'pending_net', 'diff']);
    const nestedLoopsOverTotals: string[] = [];
    const walk = (node: PlanNode) => {
      const scans = (node.Plans ?? []).filter((p) => totalsSets.has(p['CTE Name'] ?? ''));
      if (node['Node Type'] === 'Nested Loop' && scans.length === 2)
        nestedLoopsOverTotals.push(scans.map((p) => p['CTE Name']).join(' x '));
      for (const child of node.Plans ?? []) walk(child);
    };
    walk(plan);
    assert.deepEqual(nestedLoopsOverTotals, []);
  });

  /**
   * The worker backend whose refresh waits for the stats table's lock while holding the delta and totals tables
   * it wrote (deltas taken and applied), or 0.
   */
  async function refreshWaitingWithDeltasApplied(blocker: pg.Client): Promise<number> {
    const { rows } = await blocker.query<{ pid: number }>(
      `SELECT a.pid FROM pg_stat_activity a
       WHERE a.application_name = 'stategrid-worker' AND a.wait_event_type = 'Lock'
         AND (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.granted AND l.mode = 'RowExclusiveLock'
           AND l.relation IN ('stategrid_dws_delta'::regclass, 'dws_user_day_total'::regclass)) = 2`,
    );
    return rows[0]?.pid ?? 0;
  }

  async function lateFigures(): Promise<{ revisions: number; lateEvents: number }> {
    const rows = await t.q<{ revisions: number; late: number }>(
      `SELECT (SELECT count(*)::int FROM dws_revision
          WHERE stat_date = $1 AND region_id = 1 AND reason = 'late data') AS revisions,
        (SELECT late_events::int FROM stategrid_window WHERE stat_date = $1) AS late`,
      [DAY1],
    );
    return { revisions: rows[0].revisions, lateEvents: rows[0].late };
  }
});

type PlanNode = { 'Node Type': string; 'CTE Name'?: string; Plans?: PlanNode[] };
