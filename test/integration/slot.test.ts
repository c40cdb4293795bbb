import assert from 'node:assert/strict';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { withClient } from '../../src/db/client';
import { dropSlot, slotFigures } from '../../src/cdc/source-admin';
import {
  pipelineHandle,
  pipelineWorkflowId,
  resetEverything,
  startPipeline,
  waitCaughtUp,
  waitStreaming,
} from '../../src/control/pipeline';
import { ensureDatabase } from '../../src/stack/postgres';
import { statusQuery, stopUpdate } from '../../src/workflows/contract';
import { PIPELINE_ID, pipelineTestContext, runStategridIn, ownWorkerTestContext } from './helpers/pipeline';

/** Slot hygiene: the slot advances while watched tables are idle, and stop --drop-slot cleans up. */
describe('replication slot hygiene', function () {
  this.timeout(180000);
  const t = pipelineTestContext();

  it('keeps advancing while another database writes and the watched tables are idle', async () => {
    await t.freshPipeline();
    const dbUrl = (name: string) => t.cfg.sourceUrl.replace(/\/[^/]*$/, `/${name}`);
    await withClient(dbUrl('postgres'), async (admin) => {
      await admin.query('DROP DATABASE IF EXISTS stategrid_other');
      await admin.query('CREATE DATABASE stategrid_other');
    });
    const written = await withClient(dbUrl('stategrid_other'), async (other) => {
      await other.query('CREATE TABLE noise (id int, pad text)');
      // ~20 MB of WAL that the pipeline's tables have nothing to do with.
      await other.query(`INSERT INTO noise SELECT g, repeat('x', 200) FROM generate_series(1, 80000) g`);
      return (await other.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string;
    });
    await t.waitFor(
      'slot lag to drop below 1 MB after the foreign writes',
      async () => {
        const s = await slotFigures(t.cfg.sourceUrl, `stategrid_${PIPELINE_ID}`);
        const passed = await t.q<{ ok: boolean }>(
          `SELECT confirmed_flush_lsn >= $1::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $2`,
          [written, `stategrid_${PIPELINE_ID}`],
        );
        return s.exists && passed[0]?.ok === true && (s.lagBytes ?? Infinity) < 1_000_000;
      },
      60000,
    );
  });

  it('stop --drop-slot removes the slot and the publication', async () => {
    const handle = pipelineHandle(t.client, PIPELINE_ID);
    await handle.executeUpdate(stopUpdate, { args: [{ dropSlot: true }] });
    const final = await handle.result();
    assert.equal(final.phase, 'stopped');
    const slot = await slotFigures(t.cfg.sourceUrl, `stategrid_${PIPELINE_ID}`);
    assert.equal(slot.exists, false);
    const pub = await t.q(`SELECT 1 FROM pg_publication WHERE pubname = 'stategrid_pub'`);
    assert.equal(pub.length, 0);
  });
});

describe('replication slot dropped externally', function () {
  this.timeout(180000);
  const t = pipelineTestContext();

  it('fails the pipeline with a clear error and recovers with stop + start --resync', async () => {
    await t.freshPipeline({}, async () => {
      await t.q(`INSERT INTO power_user VALUES (1, 'a', '居民用电', 1, '北京', now())`);
    });
    await dropSlot(t.cfg.sourceUrl, `stategrid_${PIPELINE_ID}`);
    const handle = pipelineHandle(t.client, PIPELINE_ID);
    await t.waitFor('the pipeline to report the missing slot', async () => {
      const s = await handle.query(statusQuery);
      return s.phase === 'failed' && /does not exist/.test(s.error ?? '');
    });
    const state = await handle.query(statusQuery);
    assert.match(String(state.error), /pipeline stop && stategrid pipeline start --resync/);
    await handle.executeUpdate(stopUpdate, { args: [{}] });
    await handle.result();
    await t.q(`INSERT INTO power_consumption VALUES (1, 1, 2.00, 1.00, '2026-11-20 10:00:00')`);
    await startPipeline(t.cfg, t.client, { pipelineId: PIPELINE_ID, resync: true, segmentSeconds: 15 });
    await t.caughtUp();
    await t.assertConverged();
  });
});

describe('publication altered under a running pipeline', function () {
  this.timeout(180000);
  const t = pipelineTestContext((ctx) =>
    ctx.q(`ALTER PUBLICATION stategrid_pub DROP TABLE IF EXISTS pub_extra`).catch(() => undefined),
  );

  it('ignores an added foreign table, stops on a dropped source table, and a resync restores it', async () => {
    await t.freshPipeline({}, async () => {
      await t.q(`INSERT INTO power_user VALUES (1, 'a', '居民用电', 1, '北京', now())`);
    });
    await t.q(`CREATE TABLE IF NOT EXISTS pub_extra (id int PRIMARY KEY)`);
    await t.q(`ALTER PUBLICATION stategrid_pub ADD TABLE pub_extra`);
    await t.q(`INSERT INTO pub_extra VALUES (1) ON CONFLICT DO NOTHING`);
    await t.q(`INSERT INTO power_consumption VALUES (1, 1, 2.00, 1.00, '2026-11-20 10:00:00')`);
    await t.caughtUp();
    await t.assertConverged();

    await t.q(`ALTER PUBLICATION stategrid_pub DROP TABLE power_consumption`);
    await t.q(`INSERT INTO power_consumption VALUES (2, 1, 3.00, 1.00, '2026-11-20 11:00:00')`);
    const handle = pipelineHandle(t.client, PIPELINE_ID);
    await t.waitFor('the pipeline to report the altered publication', async () => {
      const s = await handle.query(statusQuery);
      return s.phase === 'failed' && /no longer publishes power_consumption/.test(s.error ?? '');
    });
    assert.match(
      String((await handle.query(statusQuery)).error),
      /pipeline stop && stategrid pipeline start --resync/,
    );
    await handle.executeUpdate(stopUpdate, { args: [{}] });
    await handle.result();
    // A plain restart would resume over the gap: it is refused with the same advice.
    const plain = await t.client.workflow.start('cdcPipelineWorkflow', {
      taskQueue: t.cfg.taskQueue,
      workflowId: pipelineWorkflowId(PIPELINE_ID),
      args: [{ pipelineId: PIPELINE_ID }],
    });
    await assert.rejects(plain.result(), (err: Error) =>
      /no longer publishes power_consumption/.test(String((err.cause as Error)?.cause ?? err.cause)),
    );
    await startPipeline(t.cfg, t.client, { pipelineId: PIPELINE_ID, resync: true, segmentSeconds: 15 });
    await t.caughtUp();
    await t.assertConverged();
    const published = await t.q(
      `SELECT 1 FROM pg_publication_tables WHERE pubname = 'stategrid_pub' AND tablename = 'power_consumption'`,
    );
    assert.equal(published.length, 1, 'the resync puts the table back into the publication');
  });
});

describe('replication stream across capture segments', function () {
  this.timeout(180000);
  const t = pipelineTestContext();

  it('keeps one walsender from segment to segment and applies every change once', async () => {
    await t.freshPipeline({ segmentSeconds: 5 });
    const handle = pipelineHandle(t.client, PIPELINE_ID);
    const walsender = async () =>
      (
        await t.q<{ pid: number }>(`SELECT pid FROM pg_stat_replication WHERE application_name = $1`, [
          `stategrid-${PIPELINE_ID}`,
        ])
      )[0]?.pid;
    await t.waitFor('the capture walsender', async () => (await walsender()) !== undefined);
    const first = await walsender();
    const segmentsBefore = (await handle.query(statusQuery)).totals.segments;
    let id = 0;
    await t.waitFor(
      'three more capture segments under a trickle of inserts',
      async () => {
        id += 1;
        await t.q(`INSERT INTO power_consumption VALUES ($1, 1, 2.00, 1.00, '2026-11-20 10:00:00')`, [id]);
        assert.equal(await walsender(), first, 'the replication connection was re-opened');
        return (await handle.query(statusQuery)).totals.segments >= segmentsBefore + 3;
      },
      60000,
    );
    await t.caughtUp();
    await t.assertConverged();
    const logged = await t.q<{ n: number }>(
      `SELECT count(*)::int AS n FROM ods_change_log WHERE table_name = 'power_consumption'`,
    );
    assert.equal(logged[0].n, id);
  });
});

/**
 * A transaction whose decoded changes outgrow the walsender's decoding memory goes to disk (files under
 * pg_replslot) and is read back at its commit: the worker's STATEGRID_DECODING_WORK_MEM_MB at 1 MB makes a
 * transaction of 37,000 changes spill. Every change is still applied once, `pipeline status` and the slot figures
 * show the spill. The sink is a database of its own, so the test's main pipeline is untouched.
 */
describe('decoding past its memory', function () {
  this.timeout(300000);
  const PIPELINE = 'spill';
  const { t, spawn } = ownWorkerTestContext(PIPELINE);

  it('spills a large transaction to disk and applies each of its changes once', async () => {
    const env = {
      ...process.env,
      STATEGRID_HOME: path.join(t.cfg.home, 'spill-worker'),
      STATEGRID_SINK_URL: t.cfg.sourceUrl.replace(/\/[^/?]*(\?|$)/, '/stategrid_spill$1'),
      STATEGRID_TASK_QUEUE: 'stategrid-spill',
      STATEGRID_METRICS_PORT: '0',
      STATEGRID_DECODING_WORK_MEM_MB: '1',
    };
    const cfg = loadConfig(env);
    await ensureDatabase(cfg);
    await resetEverything(cfg, t.client, PIPELINE);
    await spawn(env);
    await t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 3, 'r' || (1 + g % 3), now()
      FROM generate_series(1, 100) g`);
    await startPipeline(cfg, t.client, { pipelineId: PIPELINE, segmentSeconds: 10, batchDelayMs: 50 });
    await waitStreaming(cfg, PIPELINE, 60000);

    // One transaction of 30,000 inserts, 5,000 updates of them and 2,000 deletes, and a user moving region.
    await t.q(`BEGIN;
      INSERT INTO power_consumption SELECT g, 1 + g % 100, 1.25, 0.50, '2026-11-20 08:00:00'::timestamp + g * interval '1 s'
        FROM generate_series(1, 30000) g;
      UPDATE power_consumption SET consumption_amount = 4.00 WHERE consumption_id % 6 = 0;
      DELETE FROM power_consumption WHERE consumption_id % 15 = 1;
      UPDATE power_user SET region_id = 2, region_name = 'r2' WHERE user_id = 3;
      COMMIT`);
    assert.ok(await waitCaughtUp(cfg, PIPELINE, 120000), 'caught up');
    await t.assertConvergedWithSink(cfg.sinkUrl);
    const logged = await withClient(cfg.sinkUrl, (sink) =>
      sink.query<{ n: number }>(`SELECT count(*)::int AS n FROM ods_change_log`),
    );
    assert.equal(logged.rows[0].n, 30000 + 5000 + 2000 + 1, 'each change logged once');

    const slot = await slotFigures(t.cfg.sourceUrl, `stategrid_${PIPELINE}`);
    assert.ok(slot.decoded, 'the slot has decoding statistics');
    assert.ok(slot.decoded.spilledTransactions >= 1, `spilled: ${JSON.stringify(slot.decoded)}`);
    assert.ok(slot.decoded.spilledBytes > 1_000_000, `spilled: ${JSON.stringify(slot.decoded)}`);
    const status = runStategridIn(env, ['pipeline', 'status', '--id', PIPELINE]);
    assert.equal(status.status, 0, status.stderr);
    assert.match(
      status.stdout,
      /decoded: \d+ bytes, spilled to disk [1-9]\d* bytes in [1-9]\d* transactions/,
    );
    assert.match(status.stdout, /larger than STATEGRID_DECODING_WORK_MEM_MB spill/);
  });
});
