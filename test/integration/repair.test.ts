import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { readRowsInOneSnapshot, repairLowWatermark } from '../../src/cdc/source-admin';
import { pipelineState } from '../../src/control/pipeline';
import { openPool, withClient } from '../../src/db/client';
import { recomputePartitions } from '../../src/sink/aggregates';
import { readCheckpoint } from '../../src/sink/checkpoint';
import { applyRepairWindow } from '../../src/sink/repair';
import type { VerifyReport } from '../../src/verify/warehouse';
import { WorkflowType } from '../../src/workflows/contract';
import type { verifyWorkflow } from '../../src/workflows/verifyWorkflow';
import { REPO_ROOT } from './setup/env';
import { PIPELINE_ID, pipelineTestContext, runStategrid } from './helpers/pipeline';
import { scrapeMetrics } from './helpers/metrics';

const DAY_A = '2026-11-20';
const DAY_B = '2026-11-21';
const STREAMED_FROM = 30001; // ids of day B (twoDaysOfConsumptions) and of the load are streamed
const LOAD_FROM = 1_000_000;

/**
 * `stategrid verify --repair` against a pipeline that streams a steady load the whole time: the sink is corrupted
 * behind the pipeline in every layer, verify names exactly what was corrupted, the repair fixes it without pausing
 * the pipeline, and afterwards every layer equals the oracle and the change log holds every streamed insert once.
 */
describe('stategrid verify --repair', function () {
  this.timeout(300000);
  const t = pipelineTestContext();

  /** Small insert transactions of consumptions on another day than the corrupted ones, until stopped. */
  const load = {
    next: LOAD_FROM,
    running: null as Promise<void> | null,
    stopping: false,
    start() {
      this.stopping = false;
      this.running = (async () => {
        while (!this.stopping) {
          await t.q(
            `INSERT INTO power_consumption SELECT g, 1 + g % 200, (g % 700) / 100.0, 0.25,
               '2026-11-22 06:00:00'::timestamp + make_interval(secs => g % 60000)
             FROM generate_series($1::bigint, $1::bigint + 9) g`,
            [this.next],
          );
          this.next += 10;
          await new Promise((r) => setTimeout(r, 40));
        }
      })();
    },
    async stop() {
      this.stopping = true;
      await this.running;
    },
  };

  /** The CLI as a child process, without blocking this process (the load keeps writing meanwhile). */
  const verify = (...args: string[]) =>
    new Promise<{ code: number | null; report: VerifyReport | null; err: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [path.join(REPO_ROOT, 'bin', 'stategrid.js'), 'verify', '--id', PIPELINE_ID, '--json', ...args],
        { env: process.env },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) =>
        resolve({ code, report: code === 0 || code === 1 ? (JSON.parse(out) as VerifyReport) : null, err }),
      );
    });
  const differences = (r: VerifyReport) =>
    Object.fromEntries(
      r.tables
        .filter((x) => x.counts.missing + x.counts.extra + x.counts.different > 0)
        .map((x) => [x.table, { missing: x.missing, extra: x.extra, different: x.different }]),
    );
  const withPool = async <T>(url: string, use: (pool: pg.Pool) => Promise<T>): Promise<T> => {
    const pool = openPool({ connectionString: url, max: 1 });
    try {
      return await use(pool);
    } finally {
      await pool.end();
    }
  };
  const regionOf = async (userId: number) =>
    (await t.q<{ r: number }>(`SELECT region_id AS r FROM power_user WHERE user_id = $1`, [userId]))[0].r;

  after(() => load.stop());

  it('names each corrupted table with its keys or partitions, repairs them while streaming, equal afterwards', async () => {
    await t.twoDaysOfConsumptions([DAY_A, DAY_B]);
    load.start();
    // Days A and B close (the load's watermark, or their close instant long past) before the sink is corrupted:
    // a close recomputes its day from DWD and would mend a corrupted DWS row by itself.
    await t.waitFor(
      'days A and B closed',
      async () =>
        (
          await t.q<{ n: number }>(
            `SELECT count(*)::int AS n FROM stategrid_window WHERE is_final AND stat_date IN ($1, $2)`,
            [DAY_A, DAY_B],
          )
        )[0].n === 2,
      90000,
    );
    await t.caughtUp();

    // Corruption behind the pipeline, in every layer.
    const amended = 34567; // day B
    const amendedUser = (
      await t.q<{ u: number }>(`SELECT user_id AS u FROM power_consumption
      WHERE consumption_id = ${amended}`)
    )[0].u;
    const ghostUser = 3;
    const [amendedRegion, ghostRegion] = [await regionOf(amendedUser), await regionOf(ghostUser)];
    const unranked = (
      await t.q<{ u: number; r: number }>(`SELECT user_id AS u, region_id AS r FROM dws_user_ranking
        WHERE stat_date = '${DAY_B}' AND region_id <> ${amendedRegion} ORDER BY user_id LIMIT 1`)
    )[0];
    const statsRegion = [1, 2, 3, 4].find((r) => r !== ghostRegion)!;
    await t.q(`DELETE FROM ods_power_consumption WHERE consumption_id = 12345`);
    await t.q(`DELETE FROM ods_power_user WHERE user_id = 150`);
    await t.q(
      `UPDATE dwd_power_consumption_detail SET consumption_amount = 99 WHERE consumption_id = ${amended}`,
    );
    await t.q(`INSERT INTO dwd_power_consumption_detail
      SELECT 888888, user_id, user_name, 7.77, 1, '${DAY_A} 10:00:00', region_id, region_name, usage_type, now()
      FROM dwd_power_user_info WHERE user_id = ${ghostUser}`);
    await t.q(`UPDATE dws_region_daily_stats SET total_consumption = total_consumption + 1
      WHERE stat_date = '${DAY_A}' AND region_id = ${statsRegion}`);
    // dws_user_ranking is a view of the per-user totals: a wrong total is a wrong ranking row.
    await t.q(`UPDATE dws_user_day_total SET total_consumption = total_consumption + 1000
      WHERE stat_date = '${DAY_B}' AND user_id = ${unranked.u}`);

    const found = await verify();
    assert.equal(found.code, 1, found.err);
    const byPartition = (...p: [string, number][]) => p.map(([d, r]) => `${d}/${r}`).sort();
    assert.deepEqual(differences(found.report!), {
      ods_power_user: { missing: ['150'], extra: [], different: [] },
      ods_power_consumption: { missing: ['12345'], extra: [], different: [] },
      dwd_power_consumption_detail: { missing: [], extra: ['888888'], different: [String(amended)] },
      // DWS is checked against DWD: the corrupted total, and the partitions of the corrupted DWD rows.
      dws_region_daily_stats: {
        missing: [],
        extra: [],
        different: byPartition([DAY_A, statsRegion], [DAY_A, ghostRegion], [DAY_B, amendedRegion]),
      },
      dws_user_ranking: {
        missing: [],
        extra: [],
        different: byPartition([DAY_A, ghostRegion], [DAY_B, amendedRegion], [DAY_B, unranked.r]),
      },
    });

    const loadBefore = load.next;
    const repaired = await verify('--repair');
    assert.equal(repaired.code, 0, repaired.err);
    const r = repaired.report!;
    assert.ok(r.equal);
    assert.ok(load.next > loadBefore, 'the load kept streaming during the repair');
    assert.equal((await pipelineState(t.client, PIPELINE_ID)).phase, 'streaming', 'never paused');
    assert.deepEqual(r.repair!.found, {
      ...Object.fromEntries(r.tables.map((x) => [x.table, 0])),
      ods_power_user: 1,
      ods_power_consumption: 1,
      dwd_power_consumption_detail: 2,
      dws_region_daily_stats: 3,
      dws_user_ranking: 3,
    });
    assert.deepEqual(r.repair!.repaired.ods_power_user, { inserted: 1 });
    assert.deepEqual(r.repair!.repaired.ods_power_consumption, { inserted: 1 });
    assert.deepEqual(r.repair!.repaired.dwd_power_consumption_detail, { updated: 1, deleted: 1 });
    assert.equal(r.repair!.repaired.dwd_power_user_info, undefined, 'DWD users were right all along');
    const recomputed = await t.q<{ table_name: string; record_key: string }>(
      `SELECT table_name, record_key FROM stategrid_repair WHERE action = 'recomputed' ORDER BY 1, 2`,
    );
    for (const p of [
      ...differences(found.report!).dws_region_daily_stats.different,
      `${DAY_B}/${unranked.r}`,
    ])
      assert.ok(
        recomputed.some((x) => x.record_key === p),
        `partition ${p} recomputed`,
      );
    const restored = await t.q<{ op: string }>(
      `SELECT _op AS op FROM ods_power_consumption WHERE consumption_id = 12345`,
    );
    assert.deepEqual(restored, [{ op: 'R' }], 'a repaired ODS row is marked as read from the source');

    const after = await verify();
    assert.equal(after.code, 0, after.err);

    await load.stop();
    await t.caughtUp();
    await t.assertConverged();
    await t.assertTotalsExact();
    const log = await t.insertsInChangeLog(STREAMED_FROM);
    assert.equal(log.lost, 0, 'every streamed insert is logged');
    assert.equal(log.duplicated, 0, 'no insert is logged twice');
    assert.equal(
      log.logged,
      log.streamed,
      'nothing else is logged as an insert (repairs never write the log)',
    );
    assert.ok(log.streamed > 5000, 'the load streamed');
  });

  it('leaves keys the stream changed after the low watermark to the stream, and repairs the others', async () => {
    const [changed, deleted, corrupted, lost] = ['101', '102', '103', '104'];
    const cp = (await readCheckpoint(t.db, PIPELINE_ID))!;
    // A change the stream lost: gone from ODS and DWD, and from the per-user totals and DWS of its partition.
    const [lostAt] = await t.q<{ stat_date: string; region_id: number }>(
      `SELECT consumption_date::date::text AS stat_date, region_id FROM dwd_power_consumption_detail
       WHERE consumption_id = ${lost}`,
    );
    await t.q(`DELETE FROM ods_power_consumption WHERE consumption_id = ${lost}`);
    await t.q(`DELETE FROM dwd_power_consumption_detail WHERE consumption_id = ${lost}`);
    await withPool(t.cfg.sinkUrl, (sink) =>
      recomputePartitions(sink, [lostAt], 'recompute', () => undefined),
    );
    // The read happens first; then the stream changes two of the keys, and the third is corrupted in the sink.
    const { low, rows } = await withClient(t.cfg.sourceUrl, async (source) => ({
      low: await repairLowWatermark(source),
      rows: await readRowsInOneSnapshot(source, {
        power_user: [],
        power_consumption: [changed, deleted, corrupted, lost],
      }),
    }));
    await t.q(`UPDATE power_consumption SET consumption_amount = 42 WHERE consumption_id = ${changed}`);
    await t.q(`DELETE FROM power_consumption WHERE consumption_id = ${deleted}`);
    await t.caughtUp();
    await t.q(`UPDATE ods_power_consumption SET consumption_cost = 1000 WHERE consumption_id = ${corrupted}`);

    // Only the repair window: a repair that dies before recomputing the partitions it changed.
    const applied = await withPool(t.cfg.sinkUrl, (sink) =>
      applyRepairWindow(sink, {
        pipelineId: PIPELINE_ID,
        epoch: cp.epoch,
        verifyRunId: '0',
        lowLsn: low.lsn,
        keys: { power_user: [], power_consumption: [changed, deleted, corrupted, lost] },
        source: rows,
        extras: { power_user: [], power_consumption: [] },
      }),
    );
    assert.deepEqual(
      applied.records.map((x) => `${x.table} ${x.key} ${x.action}`).sort(),
      [
        `ods_power_consumption ${changed} skipped`,
        `ods_power_consumption ${deleted} skipped`,
        `ods_power_consumption ${corrupted} updated`,
        `ods_power_consumption ${lost} inserted`,
        `dwd_power_consumption_detail ${lost} inserted`,
      ].sort(),
      'the stale rows of the changed and the deleted key are not written back',
    );
    // The window marked the lost row's partition for a rebuild: the next refresh brings totals and DWS back.
    await t.q(
      `UPDATE power_consumption SET consumption_cost = consumption_cost WHERE consumption_id = ${changed}`,
    );
    await t.caughtUp();
    await t.assertConverged();
    await t.assertTotalsExact();
  });

  it('repairs through verifyWorkflow on the worker, counted in its metrics and shown by pipeline status', async () => {
    await t.q(`UPDATE ods_power_user SET region_name = 'nowhere' WHERE user_id = 9`);
    const ranked = (
      await t.q<{ u: number; r: number }>(`SELECT user_id AS u, region_id AS r FROM dws_user_ranking
        WHERE stat_date = '${DAY_A}' ORDER BY user_id LIMIT 1`)
    )[0];
    await t.q(`UPDATE dws_user_day_total SET total_consumption = total_consumption + 1000
      WHERE stat_date = '${DAY_A}' AND user_id = ${ranked.u}`);
    const summary = await t.client.workflow.execute<typeof verifyWorkflow>(WorkflowType.verify, {
      taskQueue: t.cfg.taskQueue,
      workflowId: `stategrid-verify-repair-${Date.now()}`,
      args: [{ pipelineId: PIPELINE_ID, repair: true }],
    });
    assert.equal(summary.equal, true, JSON.stringify(summary));
    const found = Object.entries(summary.repair!.found).filter(([, n]) => n > 0);
    assert.deepEqual(Object.fromEntries(found), { ods_power_user: 1, dws_user_ranking: 1 });
    assert.deepEqual(summary.repair!.repaired, {
      ods_power_user: { updated: 1 },
      dws_region_daily_stats: { recomputed: 1 },
      dws_user_ranking: { recomputed: 1 },
    });
    await t.assertConverged();

    const metrics = await scrapeMetrics(t.cfg);
    assert.match(
      metrics,
      /stategrid_repairs_total\{[^}]*table="ods_power_user"[^}]*action="updated"[^}]*\} 1\n/,
    );
    const status = runStategrid(['pipeline', 'status', '--id', PIPELINE_ID]);
    assert.match(status.stdout, /last repair: .*ods_power_user updated 1/, status.stderr);
    assert.match(status.stdout, new RegExp(`last repair: .*dws_user_ranking recomputed 1`));
  });
});
