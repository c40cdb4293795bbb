import assert from 'node:assert/strict';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { WORKFLOW_BUNDLE } from '../../src/build/bundle-workflows';
import type { ActivityDeps } from '../../src/activities/deps';
import { setupActivities } from '../../src/activities/setup';
import { WorkflowType, type RecomputeRangeResult, type RecomputeResult } from '../../src/workflows/contract';
import { startTestServer } from './harness';

/** recomputeRangeWorkflow with a scripted day recompute: days in parallel, never more than the bound, in order. */
describe('recomputeRangeWorkflow (time-skipping, scripted activities)', function () {
  let env: TestWorkflowEnvironment;
  before(async () => {
    env = await startTestServer();
  });
  after(async () => {
    await env?.teardown();
  });

  const run = async (input: unknown) => {
    const taskQueue = `range-tier-${Date.now()}`;
    let running = 0;
    let most = 0;
    const started: string[] = [];
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowBundle: { codePath: WORKFLOW_BUNDLE },
      maxConcurrentActivityTaskExecutions: 50,
      activities: {
        validateRecomputeRangeInput: setupActivities({} as ActivityDeps).validateRecomputeRangeInput,
        recomputeDayActivity: async (i: { date: string }): Promise<RecomputeResult> => {
          started.push(i.date);
          running += 1;
          most = Math.max(most, running);
          // Real time, not skipped: several days must overlap to show the bound.
          await new Promise((r) => setTimeout(r, 50 + (Number(i.date.slice(8)) % 3) * 30));
          running -= 1;
          const drift = i.date.endsWith('-05') ? 2 : 0;
          return { date: i.date, partitions: 3, statsChanged: drift, drift, revisions: 0 };
        },
      },
    });
    const result = await worker.runUntil(
      env.client.workflow.execute(WorkflowType.recomputeRange, {
        taskQueue,
        workflowId: `range-${Date.now()}`,
        args: [input],
      }) as Promise<RecomputeRangeResult>,
    );
    return { result, most, started };
  };

  it('recomputes every day once, at most `concurrency` at a time, and sums the drift in date order', async () => {
    const { result, most, started } = await run({ from: '2026-10-01', to: '2026-10-12', concurrency: 3 });
    assert.deepEqual(
      result.days.map((d) => d.date),
      Array.from({ length: 12 }, (_, i) => `2026-10-${String(i + 1).padStart(2, '0')}`),
    );
    assert.equal(started.length, 12);
    assert.equal(most, 3, 'three days ran side by side, never more');
    assert.equal(result.drift, 2);
  });

  it('fails a reversed or unbounded range at once, naming the field', async () => {
    await assert.rejects(run({ from: '2026-10-12', to: '2026-10-01' }), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      assert.match(
        String(err.cause?.message),
        /invalid recompute range input: from: from must not be after to/,
      );
      return true;
    });
    await assert.rejects(run({ from: '2026-10-01', to: '2026-10-02', concurrency: 64 }), (err: unknown) => {
      assert.match(String((err as WorkflowFailedError).cause?.message), /concurrency: .*16/);
      return true;
    });
  });
});
