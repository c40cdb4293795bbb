import {
  ActivityCancellationType,
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  makeContinueAsNewFunc,
  isCancellation,
  log,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  sleep,
  startChild,
  TimeoutFailure,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import {
  ErrorType,
  WorkflowType,
  type CaptureSegmentResult,
  type PipelineActivities,
  type PipelineConfig,
  type PipelineState,
} from './contract';
import { PipelineControl } from './pipeline-control';
import { fannedOutSnapshot } from './snapshot-fan-out';
import { validated } from './validation';
import { dayCloseInstant, watermarkPassed } from './window-time';

const setup = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});
const snapshot = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '6 hours',
  // Short enough that a worker lost mid-snapshot is noticed quickly; chunks heartbeat every second or so.
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '2s', maximumInterval: '1 minute' },
});
const windows = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '10 minutes',
  // A day closes beside a capture segment and the next segment waits for it: without a heartbeat timeout, a close
  // lost with its worker (the capture holder's kill could take one along) held the takeover for the whole
  // start-to-close timeout. It beats every second; a retry of a close that still runs elsewhere waits for it on
  // the DWS lock, then finds the day closed.
  heartbeatTimeout: '4 seconds',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
});

/** How long a segment waits for the worker holding the stream before it moves to the shared queue. */
const AFFINITY_WAIT = '2 seconds';
const CAPTURE_NON_RETRYABLE: string[] = [
  ErrorType.SlotMissing,
  ErrorType.NotReady,
  ErrorType.InvalidInput,
  ErrorType.StaleCapture,
];

/**
 * The capture activity, on the pipeline's shared task queue or on one worker's own queue. On its own queue a segment
 * gets one attempt, picked up within AFFINITY_WAIT: a worker that is gone (no pickup, or no heartbeat for the
 * heartbeat timeout) fails it at once, and the workflow moves capture to any other worker instead of retrying
 * against the lost one.
 */
function captureActivity(config: PipelineConfig, workerQueue?: string) {
  return proxyActivities<PipelineActivities>({
    startToCloseTimeout: `${config.segmentSeconds + 300} seconds`,
    // Segments heartbeat every second (the worker's throttle lets each through); a lost worker is noticed after
    // this long, 3-4 s after it died. 3 s timed live segments out on a 2-core machine at load 14. A worker merely
    // slow to beat is told at its next beat and lets go of the slot, which the next segment waits for.
    heartbeatTimeout: '4 seconds',
    // On pause/stop, wait until the segment has really stopped (flushed and left the slot) before going on.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    ...(workerQueue
      ? {
          taskQueue: workerQueue,
          scheduleToStartTimeout: AFFINITY_WAIT,
          retry: { maximumAttempts: 1, nonRetryableErrorTypes: CAPTURE_NON_RETRYABLE },
        }
      : {
          // Transient sink/source errors (connection loss, serialization failure, deadlock) retry with backoff.
          retry: {
            initialInterval: '1s',
            backoffCoefficient: 2,
            maximumInterval: '30s',
            nonRetryableErrorTypes: CAPTURE_NON_RETRYABLE,
          },
        }),
  }).captureChanges;
}

// Runs started before maxHistoryEvents existed carry configs without it.
const DEFAULT_HISTORY_LIMIT = 4000;
const CLOSED_DAYS_KEPT = 400;

export function initialPipelineState(): PipelineState {
  return {
    config: null,
    phase: 'validating',
    snapshot: null,
    confirmedLsn: '0/0',
    totals: {
      applied: 0,
      deadLetters: 0,
      segments: 0,
      revisions: 0,
      perTable: { power_user: 0, power_consumption: 0 },
    },
    lastSegment: null,
    health: null,
    maxEventTime: null,
    openDays: [],
    closedDays: [],
    error: null,
    continuedRuns: 0,
  };
}

const CLOSE_BESIDE_CAPTURE = 'close-days-beside-capture';
// Segments go to the worker whose parked stream holds the slot: any worker on the shared queue raced for it
// and failed with "replication slot is active" when another one held the stream.
const CAPTURE_AFFINITY = 'capture-affinity';
// The initial snapshot as chunk activities spread over the workers (one activity before).
const SNAPSHOT_FAN_OUT = 'snapshot-fan-out';
// One durable timer per next day-close instant, kept across segments: a timer around every segment added a
// TimerStarted/TimerCanceled pair to the history every segmentSeconds.
const ONE_CLOSE_TIMER = 'one-close-timer-per-instant';

/** Long-lived CDC pipeline: snapshot, then capture segments; closes day windows by watermark or durable timer. */
export async function cdcPipelineWorkflow(input?: unknown, carried?: PipelineState): Promise<PipelineState> {
  const state: PipelineState = carried ?? initialPipelineState();
  const control = new PipelineControl(state);
  control.install();
  const config = state.config ?? (await preparePipeline(state, input));
  upsertSearchAttributes({ StategridPipelineId: [config.pipelineId] });
  const capture = new CaptureRouting(config, patched(CAPTURE_AFFINITY));

  // Days whose watermark passed in a segment are closed while the next segment already runs: closing between
  // segments held the stream (a whole-day recompute) for up to a second. Histories from before keep their order.
  const closeBesideCapture = () => patched(CLOSE_BESIDE_CAPTURE);
  // Decided once per run: a run recorded without the patch keeps a timer per segment until it continues as new.
  const closeTimer = patched(ONE_CLOSE_TIMER) ? new DayCloseTimer() : undefined;
  const segments: SegmentRunner = { state, config, control, capture, closeTimer, closeBesideCapture };
  while (!control.stopRequest) {
    if (control.paused) {
      if (closeBesideCapture()) await closeDaysByWatermark(state, config);
      state.phase = 'paused';
      showDetails(state);
      await control.untilResumedOrStopped();
      continue;
    }
    const { progress, error } = await runSegment(segments);
    if (error && capture.lostWorker(state, error)) continue;
    if (error && !isCancellation(error)) {
      const failure = error instanceof ActivityFailure ? error.cause : error;
      state.error = failure instanceof Error ? failure.message : String(failure);
      state.phase = 'failed';
      log.error('capture failed; waiting for resume or stop', { error: state.error });
      showDetails(state);
      control.paused = true;
      await control.untilResumedOrStopped();
      continue;
    }
    if (progress) {
      recordSegment(state, progress);
      capture.follow(state, progress);
      await fillUnfilledColumns(state, config, progress);
    }
    if (!closeBesideCapture()) await closeDaysByWatermark(state, config);
    if (
      !control.stopRequest &&
      // An update still waiting for its phase would be cut off: pause first, and continue at a later segment.
      !(closeTimer && control.paused) &&
      allHandlersFinished() &&
      (workflowInfo().continueAsNewSuggested ||
        workflowInfo().historyLength > (config.maxHistoryEvents ?? DEFAULT_HISTORY_LIMIT))
    ) {
      state.continuedRuns += 1;
      // Set on every run, so a run started without it (`temporal workflow start` with no --task-timeout) has it
      // from its first continue-as-new on; unset, the next run keeps this run's.
      await makeContinueAsNewFunc<typeof cdcPipelineWorkflow>({
        workflowTaskTimeout: config.workflowTaskTimeoutMs,
      })(input, state);
    }
  }

  state.phase = 'stopping';
  if (closeBesideCapture()) await closeDaysByWatermark(state, config);
  if (control.stopRequest.dropSlot) {
    const dropped = await setup.dropPipelineSlot(config);
    log.info('slot dropped', dropped);
  }
  state.phase = 'stopped';
  showDetails(state);
  // The stop update returns this state: let it (and any other handler) finish before the run completes.
  await condition(allHandlersFinished);
  return state;
}

/** First run only: validates the input, registers the pipeline and takes the initial snapshot if it needs one. */
async function preparePipeline(state: PipelineState, input: unknown): Promise<PipelineConfig> {
  const config = await validated(() => setup.validatePipelineInput(input));
  state.config = config;
  const prep = await setup.preparePipeline(config);
  if (prep.phase !== 'streaming' || config.resync) {
    state.phase = 'snapshot';
    const snap = patched(SNAPSHOT_FAN_OUT)
      ? await fannedOutSnapshot(config, (done, total) => {
          state.snapshotChunks = { done, total };
          showDetails(state);
        })
      : await snapshot.snapshotSource.executeWithOptions(
          { summary: `initial snapshot of power_user, power_consumption (slot ${config.slotName})` },
          [config],
        );
    state.snapshot = { rows: snap.rows, seconds: snap.seconds, consistentLsn: snap.consistentLsn };
    state.confirmedLsn = snap.consistentLsn;
    addOpenDays(state, snap.days);
  } else {
    state.confirmedLsn = prep.confirmedLsn;
  }
  return config;
}

/** Where the next capture segment runs: the worker that holds the stream, else any worker. */
class CaptureRouting {
  private readonly shared: ReturnType<typeof captureActivity>;
  private readonly byQueue = new Map<string, ReturnType<typeof captureActivity>>();

  constructor(
    private readonly config: PipelineConfig,
    private readonly affinity: boolean,
  ) {
    this.shared = captureActivity(config);
  }

  activity(state: PipelineState): ReturnType<typeof captureActivity> {
    const queue = this.affinity ? state.captureQueue : undefined;
    if (!queue) return this.shared;
    let proxy = this.byQueue.get(queue);
    if (!proxy) this.byQueue.set(queue, (proxy = captureActivity(this.config, queue)));
    return proxy;
  }

  /** The segment's worker parked the stream: the next segment goes to its queue. */
  follow(state: PipelineState, progress: CaptureSegmentResult): void {
    if (this.affinity) state.captureQueue = progress.worker?.taskQueue;
  }

  /**
   * A segment on the holding worker's queue failed (the worker is gone: not picked up in time, or no heartbeat; or
   * a transient error there): the next one goes to the shared queue, where any worker takes it with the usual
   * retries. Failures that need an operator go the usual way.
   */
  lostWorker(state: PipelineState, error: unknown): boolean {
    if (!this.affinity || !state.captureQueue || isCancellation(error)) return false;
    const cause = error instanceof ActivityFailure ? error.cause : undefined;
    if (cause instanceof ApplicationFailure && cause.type && CAPTURE_NON_RETRYABLE.includes(cause.type))
      return false;
    log.warn('the segment on the worker holding the stream failed; any worker continues', {
      queue: state.captureQueue,
      cause:
        cause instanceof TimeoutFailure ? `${cause.timeoutType} timeout` : String(cause?.message ?? error),
    });
    state.captureQueue = undefined;
    return true;
  }
}

type SegmentRunner = {
  state: PipelineState;
  config: PipelineConfig;
  control: PipelineControl;
  capture: CaptureRouting;
  closeTimer: DayCloseTimer | undefined;
  closeBesideCapture: () => boolean;
};

/**
 * One capture segment. While it runs: close the days the last one passed, fire durable day-close timers, and on
 * pause/stop cancel it and wait until it has flushed what it decoded and let go of the slot.
 */
async function runSegment(r: SegmentRunner): Promise<{ progress?: CaptureSegmentResult; error?: unknown }> {
  const { state, config, control } = r;
  state.phase = 'streaming';
  showDetails(state);
  const segmentScope = new CancellationScope();
  const segment = segmentScope.run(() =>
    r.capture.activity(state).executeWithOptions(
      {
        summary: `capture ≤${config.segmentSeconds}s from ${state.confirmedLsn} (slot ${config.slotName})`,
      },
      [config],
    ),
  );
  let progress: CaptureSegmentResult | undefined;
  let error: unknown;
  segment.then(
    (p) => (progress = p),
    (err) => (error = err ?? new Error('capture failed')),
  );
  if (r.closeBesideCapture()) await closeDaysByWatermark(state, config);
  const endedOrInterrupted = () =>
    progress !== undefined || error !== undefined || control.paused || !!control.stopRequest;
  for (;;) {
    const next = nextTimerClose(state, config);
    let closeDue: boolean;
    if (r.closeTimer) {
      const timer = r.closeTimer;
      timer.aim(next);
      await condition(() => timer.due || endedOrInterrupted());
      closeDue = timer.due;
    } else {
      const waitMs = next === undefined ? undefined : Math.max(0, next.at - Date.now());
      closeDue = !(await condition(endedOrInterrupted, waitMs ?? '365 days'));
    }
    if (closeDue && next) {
      await closeDay(state, config, next.day, 'timer');
      continue;
    }
    if (progress || error) break;
    // The running segment flushes what it decoded before it lets go of the slot; say so meanwhile.
    state.phase = control.stopRequest ? 'stopping' : 'pausing';
    segmentScope.cancel();
    await segment.catch(() => undefined);
    break;
  }
  return { progress, error };
}

/**
 * The durable timer for the next day-close instant. It outlives capture segments and is replaced only when that
 * instant changes (the day closed, or an earlier day opened), so the history holds one timer per close instant.
 */
class DayCloseTimer {
  private armed: { at: number; fired: boolean; scope: CancellationScope } | undefined;

  /** Keeps the running timer if it already aims at `next`, otherwise replaces it (or just cancels it). */
  aim(next: { day: string; at: number } | undefined): void {
    if (this.armed && this.armed.at === next?.at) return;
    if (this.armed && !this.armed.fired) this.armed.scope.cancel();
    this.armed = undefined;
    if (!next) return;
    const timer = { at: next.at, fired: false, scope: new CancellationScope() };
    timer.scope
      .run(() => sleep(next.at - Date.now(), { summary: `close day ${next.day}` }))
      .then(
        () => (timer.fired = true),
        () => undefined, // cancelled: another close instant replaced it
      );
    this.armed = timer;
  }

  /** The instant it aims at has passed. */
  get due(): boolean {
    return !!this.armed?.fired;
  }
}

/** "Current details" in the Web UI: what an operator checks first, without running a query. */
function showDetails(state: PipelineState) {
  const t = state.totals;
  const lines = [
    `**${state.phase}** at LSN ${state.confirmedLsn}`,
    `applied ${t.applied} changes (power_user ${t.perTable.power_user}, power_consumption ${t.perTable.power_consumption}) in ${t.segments} segments`,
    `dead letters ${t.deadLetters}, late revisions ${t.revisions}`,
    `open days: ${state.openDays.join(', ') || 'none'}`,
  ];
  if (state.health) lines.push(`slot lag ${state.health.slotLagBytes ?? 'n/a'} bytes at ${state.health.at}`);
  if (state.snapshotChunks && state.phase === 'snapshot')
    lines.push(`snapshot chunks loaded: ${state.snapshotChunks.done}/${state.snapshotChunks.total}`);
  if (state.error) lines.push(`error: ${state.error}`);
  setCurrentDetails(lines.join('\n\n'));
}

function addOpenDays(state: PipelineState, days: string[]) {
  const closed = new Set(state.closedDays.map((d) => d.date));
  const open = new Set(state.openDays);
  for (const d of days) if (!closed.has(d)) open.add(d);
  state.openDays = [...open].sort();
}

function recordSegment(state: PipelineState, p: CaptureSegmentResult) {
  state.confirmedLsn = p.confirmedLsn;
  state.totals.applied += p.applied;
  state.totals.deadLetters += p.deadLetters;
  state.totals.segments += 1;
  state.totals.revisions += p.revisions;
  state.totals.perTable.power_user += p.perTable.power_user;
  state.totals.perTable.power_consumption += p.perTable.power_consumption;
  if (p.maxEventTime && (!state.maxEventTime || p.maxEventTime > state.maxEventTime))
    state.maxEventTime = p.maxEventTime;
  if (p.worker) countForWorker(state, p.worker.identity, p.applied);
  state.lastSegment = {
    applied: p.applied,
    seconds: p.seconds,
    rowsPerSecond: p.seconds > 0 ? Math.round(p.applied / p.seconds) : 0,
    confirmedLsn: p.confirmedLsn,
    at: new Date(Date.now()).toISOString(),
    worker: p.worker?.identity,
  };
  state.health = {
    slotLagBytes: p.slotLagBytes,
    orphans: p.orphans,
    deadLetters: p.deadLettersTotal,
    at: state.lastSegment.at,
  };
  addOpenDays(state, p.days);
}

const FILL_UNFILLED_COLUMNS = 'fill-unfilled-ods-columns';
// A fill that has not made the columns filled by then (it failed, or the stream kept changing their rows through
// all its repair rounds) is started again.
const FILL_RETRY_MS = 30 * 60 * 1000;

/**
 * ODS columns whose older rows lack values only the source has (see CaptureSegmentResult.unfilledColumns) are
 * filled by a verify with repair of the ODS layer, run beside the pipeline as a workflow of its own (it waits for
 * the pipeline to catch up, so it cannot run inside it); that verify, finding ODS equal, marks them filled. Started
 * at most every 30 minutes until a segment finds none left; meanwhile the columns' detail in `pipeline status`
 * names the command that fills them by hand.
 */
async function fillUnfilledColumns(state: PipelineState, config: PipelineConfig, p: CaptureSegmentResult) {
  if (!p.unfilledColumns) {
    delete state.columnFill;
    return;
  }
  const recent = state.columnFill && Date.now() - Date.parse(state.columnFill.startedAt) < FILL_RETRY_MS;
  if (recent || !patched(FILL_UNFILLED_COLUMNS)) return;
  const workflowId = `stategrid-fill-columns-${config.pipelineId}-${uuid4()}`;
  state.columnFill = { workflowId, startedAt: new Date(Date.now()).toISOString() };
  try {
    await startChild(WorkflowType.verify, {
      workflowId,
      args: [{ pipelineId: config.pipelineId, layer: 'ods', repair: true }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
    log.info('filling unfilled ODS columns', { columns: p.unfilledColumns, workflowId });
  } catch (err) {
    log.warn('could not start the fill of unfilled ODS columns', { err: String(err) });
  }
}

/** Workers remembered in the per-worker totals: restarts bring new identities, so the oldest ones drop out. */
const WORKERS_REMEMBERED = 16;

function countForWorker(state: PipelineState, identity: string, applied: number) {
  const perWorker = (state.totals.perWorker ??= {});
  const now = new Date(Date.now()).toISOString();
  const w = (perWorker[identity] ??= { applied: 0, segments: 0, lastAt: now });
  w.applied += applied;
  w.segments += 1;
  w.lastAt = now;
  const stale = Object.entries(perWorker)
    .sort(([, a], [, b]) => b.lastAt.localeCompare(a.lastAt))
    .slice(WORKERS_REMEMBERED);
  for (const [id] of stale) delete perWorker[id];
}

function nextTimerClose(
  state: PipelineState,
  config: PipelineConfig,
): { day: string; at: number } | undefined {
  let best: { day: string; at: number } | undefined;
  for (const day of state.openDays) {
    const at = dayCloseInstant(day, config.timeZone, config.closeGraceMinutes);
    if (!best || at < best.at) best = { day, at };
  }
  return best;
}

async function closeDaysByWatermark(state: PipelineState, config: PipelineConfig) {
  for (const day of [...state.openDays]) {
    if (watermarkPassed(day, state.maxEventTime, config.allowedLatenessMinutes)) {
      await closeDay(state, config, day, 'watermark');
    } else if (dayCloseInstant(day, config.timeZone, config.closeGraceMinutes) <= Date.now()) {
      await closeDay(state, config, day, 'timer');
    }
  }
}

async function closeDay(state: PipelineState, config: PipelineConfig, day: string, by: string) {
  await windows.closeDayWindowActivity.executeWithOptions({ summary: `close day ${day} (${by})` }, [
    { pipelineId: config.pipelineId, date: day, closedBy: by },
  ]);
  state.openDays = state.openDays.filter((d) => d !== day);
  state.closedDays = [...state.closedDays, { date: day, by }].slice(-CLOSED_DAYS_KEPT);
}
