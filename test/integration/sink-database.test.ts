import assert from 'node:assert/strict';
import path from 'node:path';
import { dropSlot } from '../../src/cdc/source-admin';
import { loadConfig } from '../../src/config';
import {
  resetEverything,
  startPipeline,
  terminatePipeline,
  waitCaughtUp,
  waitStreaming,
} from '../../src/control/pipeline';
import { withClient } from '../../src/db/client';
import { ensureDatabase, startPostgres, stopPostgres } from '../../src/stack/postgres';
import { stopPid } from '../../src/stack/proc';
import { verifyWarehouse } from '../../src/verify/warehouse';
import { crashPostgres, spawnWorker, TestContext } from './helpers/pipeline';
import { SINK_CLUSTER_PORT } from './setup/env';

/**
 * docs/data-semantics.md: the sink defaults to the source database, "a separate sink URL must work too": another
 * database of the cluster, or a cluster of its own (as on another host: WAL positions, transaction ids and catalogs
 * are then the sink's own, none shared with the source). A worker whose sink is elsewhere runs a whole pipeline;
 * every layer there equals the oracle computed on the source, and nothing is written to the source database. In
 * the cluster of its own, verify compares both sides across the clusters and repairs the sink from the source, and
 * a crash of that cluster alone (the source going on) loses and repeats nothing.
 */
describe('sink outside the source database', function () {
  this.timeout(300000);
  const t = new TestContext();
  const PIPELINE = 'sinkdb';
  let workerPid: number | undefined;
  // A PostgreSQL cluster of the test's own for the sink, on its own port, under the test stack's home.
  const sinkCluster = loadConfig({
    ...process.env,
    STATEGRID_HOME: path.join(t.cfg.home, 'sink-cluster'),
    STATEGRID_PG_PORT: SINK_CLUSTER_PORT,
  });

  before(() => t.open());
  afterEach(async () => {
    await terminatePipeline(t.client, PIPELINE, 'test done');
    if (workerPid) await stopPid(workerPid, 20000);
    workerPid = undefined;
    await dropSlot(t.cfg.sourceUrl, `stategrid_${PIPELINE}`);
  });
  after(async () => {
    await stopPostgres(sinkCluster);
    await t.close();
  });

  /** A worker writing into `sinkUrl` runs a snapshot and streamed changes; every layer there equals the oracle. */
  async function pipelineInto(sinkUrl: string): Promise<ReturnType<typeof loadConfig>> {
    const home = path.join(t.cfg.home, 'sinkdb-worker');
    const env = {
      ...process.env,
      STATEGRID_HOME: home,
      STATEGRID_SINK_URL: sinkUrl,
      STATEGRID_TASK_QUEUE: 'stategrid-sinkdb',
      STATEGRID_METRICS_PORT: '0',
    };
    const cfg = loadConfig(env);
    assert.notEqual(cfg.sinkUrl, cfg.sourceUrl);
    await ensureDatabase(cfg);
    await resetEverything(cfg, t.client, PIPELINE);
    workerPid = (await spawnWorker(env)).pid;

    await t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 3, 'r' || (1 + g % 3), now()
      FROM generate_series(1, 50) g`);
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 60, 1.25, 0.50, '2026-11-20 08:00:00'
      FROM generate_series(1, 2000) g`);
    await startPipeline(cfg, t.client, { pipelineId: PIPELINE, segmentSeconds: 5, batchDelayMs: 50 });
    await waitStreaming(cfg, PIPELINE, 60000);
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 60, 2.00, 1.00, '2026-11-21 09:30:00'
      FROM generate_series(2001, 6000) g`);
    await t.q(`UPDATE power_consumption SET consumption_amount = 3.00 WHERE consumption_id % 7 = 0`);
    await t.q(`DELETE FROM power_consumption WHERE consumption_id % 11 = 0`);
    await t.q(`UPDATE power_user SET region_id = 3, region_name = 'r3' WHERE user_id = 4`);
    assert.ok(await waitCaughtUp(cfg, PIPELINE, 120000), 'caught up');
    await t.assertConvergedWithSink(cfg.sinkUrl);

    const logged = await withClient(cfg.sinkUrl, (sink) =>
      sink.query<{ n: number }>(`SELECT count(*)::int AS n FROM ods_change_log`),
    );
    // 4,000 inserts, 857 updates (ids divisible by 7), 545 deletes (by 11), 1 user update: all streamed.
    assert.equal(logged.rows[0].n, 4000 + 857 + 545 + 1);
    const onSource = await t.q(`SELECT 1 FROM stategrid_checkpoint WHERE pipeline_id = $1`, [PIPELINE]);
    assert.equal(onSource.length, 0, 'nothing of this pipeline is written to the source database');
    return cfg;
  }

  it('in another database of the cluster: each layer equal to the oracle on the source', async () => {
    await pipelineInto(t.cfg.sourceUrl.replace(/\/[^/?]*(\?|$)/, '/stategrid_sinkdb$1'));
  });

  it('in a cluster of its own: each layer equal to the oracle, verify finds it equal and repairs it', async () => {
    await startPostgres(sinkCluster, () => undefined);
    const cfg = await pipelineInto(sinkCluster.sourceUrl);

    const layers = ['ods', 'dwd', 'dws'] as const;
    assert.equal((await verifyWarehouse(cfg, PIPELINE, [...layers])).equal, true, 'verify: equal');
    // A changed DWD amount and a lost ODS row, made on the sink behind the pipeline's back.
    await withClient(cfg.sinkUrl, (sink) =>
      sink.query(`UPDATE dwd_power_consumption_detail SET consumption_amount = 9.99 WHERE consumption_id = 5;
        DELETE FROM ods_power_consumption WHERE consumption_id = 6`),
    );
    const found = await verifyWarehouse(cfg, PIPELINE, [...layers]);
    assert.equal(found.equal, false, 'verify finds the damage');
    const repaired = await verifyWarehouse(cfg, PIPELINE, [...layers], undefined, { repair: true });
    assert.equal(repaired.equal, true, 'verify --repair: equal after repairing');
    await t.assertConvergedWithSink(cfg.sinkUrl);
  });

  it('in a cluster of its own that crashes while the source changes: each change applied once', async () => {
    await startPostgres(sinkCluster, () => undefined);
    const cfg = await pipelineInto(sinkCluster.sourceUrl);
    const logged = async () =>
      (
        await withClient(cfg.sinkUrl, (sink) =>
          sink.query<{ n: number }>(`SELECT count(*)::int AS n FROM ods_change_log`),
        )
      ).rows[0].n;
    const before = await logged();
    // 40 transactions of 100 rows while the sink's cluster is killed (as its host would crash) and comes back.
    const writes = (async () => {
      for (let i = 0; i < 40; i++) {
        const from = 10001 + i * 100;
        await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 60, 1.50, 0.75, '2026-11-21 10:00:00'
          FROM generate_series(${from}, ${from + 99}) g`);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await t.waitFor('the sink to take some of them', async () => (await logged()) > before, 60000);
    crashPostgres(sinkCluster);
    await writes;
    await startPostgres(sinkCluster, () => undefined);
    assert.ok(await waitCaughtUp(cfg, PIPELINE, 120000), 'caught up after the sink came back');
    assert.equal(await logged(), before + 4000, 'each insert logged once');
    await t.assertConvergedWithSink(cfg.sinkUrl);
  });
});
