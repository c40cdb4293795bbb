import { upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { RecomputeInput, RecomputeResult } from './contract';
import { recomputeActivities as acts } from './recompute-activity';
import { inputValidators, validated } from './validation';
import { previousLocalDay } from './window-time';

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
