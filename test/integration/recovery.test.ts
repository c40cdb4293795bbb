import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tsToMs } from '@temporalio/common/lib/time';
import { pausePipeline, pipelineHandle, pipelineState, resumePipeline } from '../../src/control/pipeline';
import { readPid } from '../../src/stack/proc';
import { PIPELINE_ID, pipelineTestContext } from './helpers/pipeline';

/**
 * Recovery paths of the capture: a huge single source transaction applied in bounded pieces, sink connections
 * killed mid-stream (retried by Temporal), and continue-as-new keeping each run's history bounded.
 */
const USERS = `INSERT INTO power_user VALUES (1, 'a', '居民用电', 1, '北京', now()), (2, 'b', '商业用电', 1, '北京', now()),
  (3, 'c', '工业用电', 2, '上海', now())`;

/** Peak resident memory of the worker process since it started (VmHWM), in MB. */
function workerPeakRssMb(home: string): number {
  const pid = readPid(path.join(home, 'run', 'worker.pid'));
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
  return kb / 1024;
}

describe('capture recovery paths', function () {
  this.timeout(600000);
  const t = pipelineTestContext(undefined, { walAudit: true });

  it('applies a single 1,000,000-row source transaction in bounded batches', async () => {
    // Decoding a million changes a second time through the SQL interface would take minutes on its own: this test
    // checks exactly-once by counting the change log's distinct ids below instead of auditing the WAL.
    t.walAudit = false;
    try {
      await t.freshPipeline({ batchRows: 5000 }, () => t.q(USERS).then(() => undefined));
    } finally {
      t.walAudit = true;
    }
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 3, (g % 50000) / 100.0, (g % 30000) / 100.0,
      '2026-11-20'::timestamp + make_interval(secs => g % 86400) FROM generate_series(1, 1000000) g`);
    // Mid-transaction checkpoints show the transaction was committed to the sink in pieces.
    let sawPartial = false;
    await t.waitFor(
      'the big transaction applied',
      async () => {
        // The checkpoint's count, not count(*) of ODS: a scan of a million rows every 200 ms would slow the
        // pipeline it watches.
        const cp = await t.q<{ n: number }>(
          `SELECT changes_applied::int AS n FROM stategrid_checkpoint WHERE pipeline_id = $1`,
          [PIPELINE_ID],
        );
        if (cp[0].n > 0 && cp[0].n < 1_000_000) sawPartial = true;
        return cp[0].n === 1_000_000;
      },
      400000,
    );
    await t.caughtUp(300000);
    await t.assertConverged();
    assert.ok(sawPartial, 'parts of the transaction were visible before its end (bounded batches)');
    const log = await t.q<{ n: number; d: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT row_data->>'consumption_id')::int AS d FROM ods_change_log`,
    );
    assert.deepEqual(log[0], { n: 1_000_000, d: 1_000_000 });
    const peak = workerPeakRssMb(t.cfg.home);
    console.log(`      worker peak RSS ${peak.toFixed(0)} MB`);
    assert.ok(peak < 300, `worker peak RSS ${peak.toFixed(0)} MB stays under 300 MB`);
  });

  it('retries after its sink connections are killed mid-stream, applying each change once', async () => {
    await t.freshPipeline({ batchRows: 1000 }, () => t.q(USERS).then(() => undefined));
    const writing = (async () => {
      for (let start = 1; start <= 30000; start += 100) {
        await t.q(
          `INSERT INTO power_consumption SELECT g, 1 + g % 3, 1.00, 0.50, '2026-11-21 10:00:00'
           FROM generate_series($1::bigint, $2::bigint) g`,
          [start, start + 99],
        );
      }
    })();
    let killed = 0;
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 400));
      const rows = await t.q<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE application_name = 'stategrid-worker'`,
      );
      killed += rows[0].n;
    }
    await writing;
    assert.ok(killed > 0, 'sink connections were killed');
    await t.caughtUp(180000);
    await t.assertConverged();
    const log = await t.q<{ n: number; d: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT row_data->>'consumption_id')::int AS d FROM ods_change_log`,
    );
    assert.deepEqual(log[0], { n: 30000, d: 30000 });
  });

  it('pause returns once paused, applies nothing while paused, and resume continues where it stopped', async () => {
    await t.freshPipeline({ segmentSeconds: 5 }, () => t.q(USERS).then(() => undefined));
    const paused = await pausePipeline(t.client, PIPELINE_ID);
    assert.equal(paused.phase, 'paused', 'the update returns the state it waited for');
    assert.equal((await pipelineState(t.client, PIPELINE_ID)).phase, 'paused', 'status agrees right after');
    await t.q(
      `INSERT INTO power_consumption SELECT g, 1, 1.00, 0.50, '2026-11-22 10:00:00' FROM generate_series(1, 100) g`,
    );
    await new Promise((r) => setTimeout(r, 3000));
    const during = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM ods_power_consumption`);
    assert.equal(during[0].n, 0, 'nothing is applied while paused');
    assert.equal((await resumePipeline(t.client, PIPELINE_ID)).phase, 'streaming');
    await t.caughtUp();
    await t.assertConverged();
  });

  it('continues as new when the history grows, carrying its state and its workflow task timeout', async () => {
    await t.freshPipeline({ segmentSeconds: 5, maxHistoryEvents: 20, workflowTaskTimeoutMs: 4000 }, () =>
      t.q(USERS).then(() => undefined),
    );
    const handle = pipelineHandle(t.client, PIPELINE_ID);
    const taskTimeoutMs = async () =>
      tsToMs((await handle.describe()).raw.executionConfig?.defaultWorkflowTaskTimeout);
    const firstRun = (await handle.describe()).runId;
    assert.equal(await taskTimeoutMs(), 4000, "pipeline start sets the input's workflow task timeout");
    await t.q(`INSERT INTO power_consumption VALUES (1, 1, 2.00, 1.00, '2026-11-22 10:00:00')`);
    await t.waitFor('a continued run', async () => (await handle.describe()).runId !== firstRun, 120000);
    assert.equal(await taskTimeoutMs(), 4000, 'the continued run has it too');
    await t.q(`INSERT INTO power_consumption VALUES (2, 2, 3.00, 1.50, '2026-11-22 11:00:00')`);
    await t.caughtUp();
    await t.assertConverged();
    const state = await pipelineState(t.client, PIPELINE_ID);
    assert.ok(state.continuedRuns >= 1);
    assert.ok(state.health, 'the status query reports slot lag, orphans and dead letters');
    assert.equal(state.health.orphans, 0);
    assert.equal(state.health.deadLetters, 0);
    assert.equal(typeof state.health.slotLagBytes, 'number');
    assert.ok(state.totals.applied >= 1, 'totals carried across runs');
  });
});
