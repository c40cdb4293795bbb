import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { dropSlot } from '../../src/cdc/source-admin';
import { loadConfig } from '../../src/config';
import {
  pipelineState,
  resetEverything,
  startPipeline,
  stopPipeline,
  temporalClient,
  waitCaughtUp,
  waitStreaming,
} from '../../src/control/pipeline';
import { portOpen, spawnDetached, stopPid, waitFor } from '../../src/stack/proc';
import { resolveTemporalCli } from '../../src/stack/temporal';
import { spawnWorker, TestContext } from './helpers/pipeline';

/**
 * Any Temporal server, not only the embedded one started with our search attributes: a plain `temporal server
 * start-dev` without `--search-attribute` flags. The worker registers the attributes itself, the pipeline runs
 * to an oracle-equal warehouse, the status query answers and the runs can be listed by pipeline.
 */
describe('a plain Temporal server without our search attributes', function () {
  this.timeout(240000);
  const t = new TestContext();
  const PIPELINE = 'anyserver';
  const PORT = 7283;
  let serverPid: number | undefined;
  let workerPid: number | undefined;
  let other: Awaited<ReturnType<typeof temporalClient>> | undefined;

  before(() => t.open());
  after(async () => {
    if (workerPid) await stopPid(workerPid, 20000);
    await other?.close();
    if (serverPid) await stopPid(serverPid, 20000);
    await dropSlot(t.cfg.sourceUrl, `stategrid_${PIPELINE}`);
    await t.close();
  });

  it('registers them, runs the pipeline to the oracle, answers status and lists runs by pipeline', async () => {
    const home = path.join(t.cfg.home, 'any-server');
    fs.mkdirSync(path.join(home, 'logs'), { recursive: true });
    const bin = await resolveTemporalCli(t.cfg, () => undefined);
    serverPid = spawnDetached(
      bin,
      [
        'server',
        'start-dev',
        '--ip',
        '127.0.0.1',
        '--port',
        String(PORT),
        '--headless',
        '--log-level',
        'warn',
      ],
      { logFile: path.join(home, 'logs', 'temporal.log') },
    );
    await waitFor('the plain dev server', () => portOpen(PORT, '127.0.0.1'), 60000);
    const env = {
      ...process.env,
      STATEGRID_HOME: home,
      TEMPORAL_ADDRESS: `127.0.0.1:${PORT}`,
      STATEGRID_METRICS_PORT: '0',
    };
    const cfg = loadConfig(env);
    other = await temporalClient(cfg);
    const before = await other.client.connection.operatorService.listSearchAttributes({
      namespace: 'default',
    });
    assert.equal(before.customAttributes?.StategridPipelineId, undefined, 'the server starts without them');

    await resetEverything(cfg, t.client, PIPELINE);
    workerPid = (await spawnWorker(env)).pid;
    await t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 3, 'r' || (1 + g % 3), now()
      FROM generate_series(1, 30) g`);
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 40, 1.25, 0.50, '2026-11-20 08:00:00'
      FROM generate_series(1, 1000) g`);
    await startPipeline(cfg, other.client, { pipelineId: PIPELINE, segmentSeconds: 5, batchDelayMs: 50 });
    await waitStreaming(cfg, PIPELINE, 60000);
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 40, 2.00, 1.00, '2026-11-21 09:30:00'
      FROM generate_series(1001, 3000) g`);
    await t.q(`DELETE FROM power_consumption WHERE consumption_id % 9 = 0`);
    assert.ok(await waitCaughtUp(cfg, PIPELINE, 120000), 'caught up');
    await t.assertConvergedWithSink(cfg.sinkUrl);

    const after = await other.client.connection.operatorService.listSearchAttributes({
      namespace: 'default',
    });
    assert.ok(after.customAttributes?.StategridPipelineId, 'registered StategridPipelineId');
    assert.ok(after.customAttributes?.StategridStatDate, 'registered StategridStatDate');
    // The status query counts a segment's changes when the segment ends (every 5 s here).
    await waitFor(
      'the status query to count the streamed changes',
      async () => (await pipelineState(other!.client, PIPELINE)).totals.applied >= 2000,
      30000,
    );
    assert.equal((await pipelineState(other.client, PIPELINE)).phase, 'streaming');
    const listed: string[] = [];
    await waitFor(
      'the run listed by StategridPipelineId',
      async () => {
        listed.length = 0;
        for await (const wf of other!.client.workflow.list({ query: `StategridPipelineId = '${PIPELINE}'` }))
          listed.push(wf.workflowId);
        return listed.length > 0;
      },
      30000,
    );
    assert.deepEqual(listed, [`stategrid-pipeline-${PIPELINE}`]);
    assert.equal((await stopPipeline(other.client, PIPELINE, { dropSlot: true })).phase, 'stopped');
  });
});
