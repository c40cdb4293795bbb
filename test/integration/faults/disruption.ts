import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

/**
 * Evidence that a fault interrupted the work it aimed at, read from the pipeline's workflow history: an activity a
 * worker was running when the fault hit later failed, timed out or started again with a higher attempt number.
 */
export type RunningActivity = { runId: string; activityId: string; attempt: number; type: string };

const STARTED = temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;

/** The pipeline's pending activity of `type` that a worker has started (not one waiting between attempts), if any. */
export async function runningActivity(
  client: Client,
  workflowId: string,
  type: string,
): Promise<RunningActivity | undefined> {
  const desc = await client.workflow.getHandle(workflowId).describe();
  const a = desc.raw.pendingActivities?.find((p) => p.activityType?.name === type && p.state === STARTED);
  if (!a?.activityId) return undefined;
  return { runId: desc.runId, activityId: a.activityId, attempt: a.attempt ?? 1, type };
}

/**
 * Whether `a` was interrupted after it was seen running: its run's history records a failure or timeout of it, or
 * an attempt after the one seen (a retried activity's started event carries its final attempt), or it is still
 * pending with a later attempt.
 */
export async function wasInterrupted(
  client: Client,
  workflowId: string,
  a: RunningActivity,
): Promise<boolean> {
  const handle = client.workflow.getHandle(workflowId, a.runId);
  const { events } = await handle.fetchHistory();
  const scheduled = events?.find((e) => e.activityTaskScheduledEventAttributes?.activityId === a.activityId);
  if (!scheduled?.eventId) return false;
  const id = String(scheduled.eventId);
  const of = (attrs?: { scheduledEventId?: unknown } | null) =>
    !!attrs && String(attrs.scheduledEventId) === id;
  for (const e of events ?? []) {
    if (of(e.activityTaskFailedEventAttributes) || of(e.activityTaskTimedOutEventAttributes)) return true;
    if (
      of(e.activityTaskStartedEventAttributes) &&
      (e.activityTaskStartedEventAttributes!.attempt ?? 1) > a.attempt
    )
      return true;
  }
  const pending = (await handle.describe()).raw.pendingActivities ?? [];
  return pending.some((p) => p.activityId === a.activityId && (p.attempt ?? 1) > a.attempt);
}
