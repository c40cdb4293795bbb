import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { dropSlot } from '../../src/cdc/source-admin';
import { loadConfig } from '../../src/config';
import { pipelineState, stopPipeline, temporalClient } from '../../src/control/pipeline';
import { portOpen, spawnDetached, stopPid, waitFor } from '../../src/stack/proc';
import { resolveTemporalCli } from '../../src/stack/temporal';
import { spawnWorker, TestContext } from './helpers/pipeline';
import { runWholePipeline } from './helpers/whole-pipeline';

/**
 * Any Temporal server, not only the embedded one started with our search attributes: a plain `temporal server
 * start-dev` without `--search-attribute` flags. The worker registers the attributes itself, a whole pipeline
 * (snapshot, streaming, day close, scheduled recompute) ends oracle-equal, the status query answers and the runs
 * can be listed by pipeline.
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

  it('registers them, runs a whole pipeline to the oracle, answers status and lists runs by pipeline', async () => {
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

    workerPid = (await spawnWorker(env)).pid;
    await runWholePipeline(t, cfg, other.client, PIPELINE);

    const after = await other.client.connection.operatorService.listSearchAttributes({
      namespace: 'default',
    });
    assert.ok(after.customAttributes?.StategridPipelineId, 'registered StategridPipelineId');
    assert.ok(after.customAttributes?.StategridStatDate, 'registered StategridStatDate');
    // The status query counts a segment's changes when the segment ends (every 5 s here).
    await waitFor(
      'the status query to count the streamed changes',
      async () => (await pipelineState(other!.client, PIPELINE)).totals.applied >= 2001,
      30000,
    );
    assert.equal((await pipelineState(other.client, PIPELINE)).phase, 'streaming');
    // The pipeline and its scheduled recompute both carry the attribute.
    const listed: string[] = [];
    await waitFor(
      'the run listed by StategridPipelineId',
      async () => {
        listed.length = 0;
        for await (const wf of other!.client.workflow.list({ query: `StategridPipelineId = '${PIPELINE}'` }))
          listed.push(wf.workflowId);
        return listed.includes(`stategrid-pipeline-${PIPELINE}`);
      },
      30000,
    );
    assert.equal((await stopPipeline(other.client, PIPELINE, { dropSlot: true })).phase, 'stopped');
  });
});
