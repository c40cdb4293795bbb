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

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
const at = (e?: HistoryEvent | null) =>
  e?.eventTime ? Number(e.eventTime.seconds) * 1000 + Math.round((e.eventTime.nanos ?? 0) / 1e6) : undefined;

/**
 * Where the time of a capture takeover went, read from the pipeline's history: when the segment `killed` ended
 * (and how), when the workflow next ran (after how many workflow task timeouts: a sticky cache on the dead worker,
 * or a workflow task it had started, which times out after the run's workflow task timeout and keeps the segment's
 * end buffered until then, so it is counted from the killed segment's schedule on), which other activities were
 * retried meanwhile (one the workflow waited for, lost with the worker), when the next segment was scheduled and
 * when a worker started it. Milliseconds since epoch, absent if not seen.
 */
export async function takeoverSteps(
  client: Client,
  workflowId: string,
  killed: RunningActivity,
): Promise<{
  ended?: number;
  endedBy?: string;
  workflowTask?: number;
  stickyTimeouts: number;
  inFlightTimeouts: number;
  retriedActivities: string[];
  scheduled?: number;
  started?: number;
}> {
  const handle = client.workflow.getHandle(workflowId, killed.runId);
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduledId = String(
    events.find((e) => e.activityTaskScheduledEventAttributes?.activityId === killed.activityId)?.eventId,
  );
  const endIndex = events.findIndex((e) =>
    [e.activityTaskTimedOutEventAttributes, e.activityTaskFailedEventAttributes].some(
      (a) => a && String(a.scheduledEventId) === scheduledId,
    ),
  );
  if (endIndex < 0) return { stickyTimeouts: 0, inFlightTimeouts: 0, retriedActivities: [] };
  const end = events[endIndex];
  const after = events.slice(endIndex + 1);
  const next = after.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === killed.type);
  const nextId = next ? String(next.eventId) : undefined;
  const startedEvent = after.find(
    (e) => nextId && String(e.activityTaskStartedEventAttributes?.scheduledEventId) === nextId,
  );
  const pending = (await handle.describe()).raw.pendingActivities?.find(
    (p) => p.activityId === next?.activityTaskScheduledEventAttributes?.activityId,
  );
  const started =
    at(startedEvent) ?? (pending?.lastStartedTime ? at({ eventTime: pending.lastStartedTime }) : undefined);
  const window = events.slice(
    events.findIndex((e) => String(e.eventId) === scheduledId),
    next ? events.indexOf(next) : events.length,
  );
  const { TIMEOUT_TYPE_SCHEDULE_TO_START, TIMEOUT_TYPE_START_TO_CLOSE } = temporal.api.enums.v1.TimeoutType;
  const taskTimeouts = (type: number) =>
    window.filter((e) => e.workflowTaskTimedOutEventAttributes?.timeoutType === type).length;
  const typeOf = (id: unknown) =>
    events.find((e) => String(e.eventId) === String(id))?.activityTaskScheduledEventAttributes?.activityType
      ?.name;
  const failure = end.activityTaskTimedOutEventAttributes?.failure;
  const timeoutType = (failure?.timeoutFailureInfo ?? failure?.cause?.timeoutFailureInfo)?.timeoutType;
  return {
    ended: at(end),
    endedBy: timeoutType ? temporal.api.enums.v1.TimeoutType[timeoutType] : 'failed',
    workflowTask: at(after.find((e) => e.workflowTaskStartedEventAttributes)),
    stickyTimeouts: taskTimeouts(TIMEOUT_TYPE_SCHEDULE_TO_START),
    inFlightTimeouts: taskTimeouts(TIMEOUT_TYPE_START_TO_CLOSE),
    // A retried attempt leaves no event of its own: the started event (written at the end) carries the attempt.
    retriedActivities: window
      .filter((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1)
      .map((e) => typeOf(e.activityTaskStartedEventAttributes!.scheduledEventId) ?? '?'),
    scheduled: at(next),
    started,
  };
}

/**
 * The worker (identity `<host>-<pid>`) that started the current run's last workflow task: the one whose sticky
 * cache holds the workflow, which gets its next task first.
 */
export async function workflowCachedOn(client: Client, workflowId: string): Promise<string | undefined> {
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const started = (events ?? []).filter((e) => e.workflowTaskStartedEventAttributes);
  return started.at(-1)?.workflowTaskStartedEventAttributes?.identity ?? undefined;
}
