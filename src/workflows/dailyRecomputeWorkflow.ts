import { proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { ErrorType, type PipelineActivities, type RecomputeInput, type RecomputeResult } from './contract';
import { inputValidators, validated } from './validation';
import { previousLocalDay } from './window-time';

const acts = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '30 minutes',
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});

/** Time zone the schedule's "previous day" is computed in; the schedule passes it in its input. */
const DEFAULT_TIME_ZONE = 'Asia/Shanghai';

/**
 * Recomputes one day's DWS from DWD and reports the drift. Without a date, the day is the local day before the
 * schedule's nominal time (TemporalScheduledStartTime), so a backfilled or late-running schedule recomputes the
 * day it was meant for.
 */
export async function dailyRecomputeWorkflow(input?: RecomputeInput): Promise<RecomputeResult> {
  const valid = await validated(() => inputValidators.validateRecomputeInput(input ?? {}));
  const scheduled = workflowInfo().searchAttributes?.TemporalScheduledStartTime?.[0];
  const nominal = scheduled ? new Date(scheduled as string | Date).getTime() : Date.now();
  const date = valid.date ?? previousLocalDay(nominal, valid.timeZone ?? DEFAULT_TIME_ZONE);
  upsertSearchAttributes({ StategridStatDate: [date], StategridPipelineId: [valid.pipelineId] });
  return acts.recomputeDayActivity.executeWithOptions(
    { summary: `recompute DWS for ${date} (pipeline ${valid.pipelineId})` },
    [{ pipelineId: valid.pipelineId, date }],
  );
}
