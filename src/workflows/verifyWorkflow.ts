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
 * against DWD), on demand or on a daily Schedule; with `repair`, what differs is repaired while the pipeline
 * streams and compared again. The result is the run's result and its current details; a difference does not fail
 * the run, it is what the run reports.
 */
export async function verifyWorkflow(input?: unknown): Promise<VerifySummary> {
  const valid = await validated(() => inputValidators.validateVerifyInput(input ?? {}));
  upsertSearchAttributes({ StategridPipelineId: [valid.pipelineId] });
  const summary = await acts.verifyWarehouseActivity.executeWithOptions(
    {
      summary: `verify ${valid.layer} layers of pipeline ${valid.pipelineId}${valid.repair ? ' and repair them' : ''}`,
    },
    [valid],
  );
  setCurrentDetails(`${outcome(summary)}${summary.repair ? `; ${repaired(summary.repair)}` : ''}`);
  return summary;
}

const listOf = (counts: Record<string, number>) =>
  Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([t, n]) => `${t} ${n}`)
    .join(', ');

function outcome(summary: VerifySummary): string {
  return summary.equal
    ? `**equal**: the warehouse equals its source (${summary.seconds.toFixed(1)} s)`
    : `**differs**: ${listOf(summary.mismatched)} (after ${summary.rechecks} re-checks)`;
}

function repaired(repair: NonNullable<VerifySummary['repair']>): string {
  const written = Object.fromEntries(
    Object.entries(repair.repaired).map(([t, actions]) => [
      t,
      Object.entries(actions)
        .filter(([a]) => a !== 'skipped')
        .reduce((n, [, c]) => n + c, 0),
    ]),
  );
  return `**repaired** in ${repair.rounds} round(s), found: ${listOf(repair.found)}; written: ${listOf(written)}`;
}
