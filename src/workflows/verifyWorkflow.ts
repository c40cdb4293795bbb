import { proxyActivities, setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import type { PipelineActivities, VerifySummary } from './contract';
import { inputValidators, validated } from './validation';

const acts = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '30 minutes',
  // The comparison heartbeats after each table; a lost worker is noticed within a minute.
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5s', maximumInterval: '1 minute', maximumAttempts: 5 },
});

/**
 * Compares the warehouse with its source while the pipeline streams (ODS and DWD by key-range checksums, DWS
 * against DWD), on demand or on a daily Schedule. The result is the run's result and its current details; a
 * difference does not fail the run, it is what the run reports.
 */
export async function verifyWorkflow(input?: unknown): Promise<VerifySummary> {
  const valid = await validated(() => inputValidators.validateVerifyInput(input ?? {}));
  upsertSearchAttributes({ StategridPipelineId: [valid.pipelineId] });
  const summary = await acts.verifyWarehouseActivity.executeWithOptions(
    { summary: `verify ${valid.layer} layers of pipeline ${valid.pipelineId}` },
    [valid],
  );
  const differing = Object.entries(summary.mismatched).filter(([, n]) => n > 0);
  setCurrentDetails(
    summary.equal
      ? `**equal**: the warehouse equals its source (${summary.seconds.toFixed(1)} s)`
      : `**differs**: ${differing.map(([t, n]) => `${t} ${n}`).join(', ')} (after ${summary.rechecks} re-checks)`,
  );
  return summary;
}
