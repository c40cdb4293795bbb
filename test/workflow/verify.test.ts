import assert from 'node:assert/strict';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { WORKFLOW_BUNDLE } from '../../src/build/bundle-workflows';
import type { ActivityDeps } from '../../src/activities/deps';
import { setupActivities } from '../../src/activities/setup';
import { WorkflowType, type VerifyInput, type VerifySummary } from '../../src/workflows/contract';
import { startTestServer } from './harness';

/** verifyWorkflow with a scripted comparison: its input check, result and what the Web UI shows. */
describe('verifyWorkflow (time-skipping, scripted activities)', function () {
  let env: TestWorkflowEnvironment;
  before(async () => {
    env = await startTestServer();
  });
  after(async () => {
    await env?.teardown();
  });

  const compared: Required<VerifyInput>[] = [];
  const run = async (
    input: unknown,
    mismatched: Record<string, number>,
    repair?: VerifySummary['repair'],
  ) => {
    const taskQueue = `verify-tier-${compared.length}-${Date.now()}`;
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowBundle: { codePath: WORKFLOW_BUNDLE },
      activities: {
        // The real input check (it needs no dependencies): a bad input fails without retries.
        validateVerifyInput: setupActivities({} as ActivityDeps).validateVerifyInput,
        verifyWarehouseActivity: async (i: Required<VerifyInput>): Promise<VerifySummary> => {
          compared.push(i);
          const equal = Object.values(mismatched).every((n) => n === 0);
          return {
            pipelineId: i.pipelineId,
            equal,
            seconds: 0.5,
            rechecks: equal ? 0 : 3,
            mismatched,
            ...(i.repair && repair ? { repair } : {}),
          };
        },
      },
    });
    return worker.runUntil(async () => {
      const handle = await env.client.workflow.start(WorkflowType.verify, {
        taskQueue,
        workflowId: `verify-${Date.now()}`,
        args: [input],
      });
      const result = (await handle.result()) as VerifySummary;
      // What the Web UI shows as the run's current details.
      const meta = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      return { result, details: meta.currentDetails ?? '' };
    });
  };

  it('compares the chosen layers of the pipeline and shows the outcome as the run details', async () => {
    const equal = await run({ pipelineId: 'p1' }, { ods_power_user: 0, dws_user_ranking: 0 });
    assert.deepEqual(compared.at(-1), { pipelineId: 'p1', layer: 'all', repair: false });
    assert.equal(equal.result.equal, true);
    assert.match(equal.details, /equal/);

    const differs = await run({ pipelineId: 'p1', layer: 'dwd' }, { dwd_power_consumption_detail: 3 });
    assert.deepEqual(compared.at(-1), { pipelineId: 'p1', layer: 'dwd', repair: false });
    assert.equal(differs.result.equal, false, 'a difference is the run result, not a failure');
    assert.match(differs.details, /differs.*dwd_power_consumption_detail 3/);
  });

  it('repairs when asked and shows what was found and written beside the outcome', async () => {
    const repaired = await run(
      { pipelineId: 'p1', repair: true },
      { dwd_power_consumption_detail: 0 },
      {
        rounds: 1,
        found: { dwd_power_consumption_detail: 2, dws_user_ranking: 1 },
        repaired: {
          dwd_power_consumption_detail: { updated: 1, deleted: 1 },
          dws_user_ranking: { recomputed: 1 },
          ods_power_consumption: { skipped: 1 },
        },
      },
    );
    assert.deepEqual(compared.at(-1), { pipelineId: 'p1', layer: 'all', repair: true });
    assert.equal(repaired.result.equal, true);
    assert.deepEqual(repaired.result.repair?.repaired.dws_user_ranking, { recomputed: 1 });
    assert.match(repaired.details, /equal.*repaired.*dwd_power_consumption_detail 2, dws_user_ranking 1/);
    assert.doesNotMatch(
      repaired.details,
      /ods_power_consumption/,
      'keys left to the stream were not written',
    );
  });

  it('fails a malformed input at once, naming the field', async () => {
    const before = compared.length;
    await assert.rejects(run({ layer: 'everything' }, {}), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      assert.match(String(err.cause?.message), /invalid verify input: layer/);
      return true;
    });
    assert.equal(compared.length, before, 'nothing compared');
  });
});
