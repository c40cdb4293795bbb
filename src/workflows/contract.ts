/**
 * The workflow contract: inputs, results, the pipeline's serialisable state, signal/query/update definitions,
 * workflow type names and the error type names activities and workflows agree on. Shared with activities and
 * client code, so it holds only types and definitions (no workflow logic).
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

/** Workflow type names, as `temporal workflow start --type` and `client.workflow.start` take them. */
export const WorkflowType = {
  pipeline: 'cdcPipelineWorkflow',
  recompute: 'dailyRecomputeWorkflow',
  recomputeRange: 'recomputeRangeWorkflow',
  verify: 'verifyWorkflow',
} as const;

/**
 * ApplicationFailure types: an activity throws them (non-retryable), the workflow's retry policies name them.
 * InvalidInput: a workflow input failed validation. SlotMissing: the replication slot is gone. PublicationAltered:
 * the publication no longer covers the source tables. StaleCapture: another capture moved the slot past this one.
 * NotReady: capture started before the pipeline was prepared.
 */
export const ErrorType = {
  /** A fanned-out snapshot's exported snapshot is gone: the workflow starts the snapshot over. */
  SnapshotLost: 'SnapshotLost',
  InvalidInput: 'InvalidInput',
  SlotMissing: 'SlotMissing',
  PublicationAltered: 'PublicationAltered',
  StaleCapture: 'StaleCapture',
  NotReady: 'NotReady',
} as const;
export type ErrorTypeName = (typeof ErrorType)[keyof typeof ErrorType];

/** Restart marks while streaming, ms apart, unless the input sets restartMarkMs (see src/cdc/capture.ts). */
export const DEFAULT_RESTART_MARK_MS = 1000;

export type PipelineConfig = {
  pipelineId: string;
  slotName: string;
  publication: string;
  plugin: 'pgoutput' | 'wal2json';
  resync: boolean;
  batchRows: number;
  batchDelayMs: number;
  segmentSeconds: number;
  dwsRefreshMs: number;
  snapshotChunkRows: number;
  /** Snapshot chunks loading at once over all workers; absent in configs of runs from before the fan-out. */
  snapshotParallelism?: number;
  /** Restart marks while streaming, ms apart (0: none); absent in configs of runs from before them (the default). */
  restartMarkMs?: number;
  allowedLatenessMinutes: number;
  closeGraceMinutes: number;
  /** Continue-as-new once a run's history has this many events (keeps each run's history bounded). */
  maxHistoryEvents: number;
  /**
   * Workflow task timeout of every run after this one; absent in configs of runs from before it, whose runs keep
   * the one they started with (their longer histories need it).
   */
  workflowTaskTimeoutMs?: number;
  timeZone: string;
};

export type SegmentSummary = {
  applied: number;
  seconds: number;
  rowsPerSecond: number;
  confirmedLsn: string;
  at: string;
  /** Identity of the worker that ran it. */
  worker?: string;
};

export type PipelinePhase =
  'validating' | 'snapshot' | 'streaming' | 'pausing' | 'paused' | 'stopping' | 'stopped' | 'failed';

/** What the `status` query returns and what continue-as-new carries to the next run. */
export type PipelineState = {
  config: PipelineConfig | null;
  phase: PipelinePhase;
  snapshot: { rows: Record<string, number>; seconds: number; consistentLsn: string } | null;
  confirmedLsn: string;
  totals: {
    applied: number;
    deadLetters: number;
    segments: number;
    revisions: number;
    perTable: { power_user: number; power_consumption: number };
    /**
     * Changes applied by each worker's segments (the most recent workers only); absent in states recorded before.
     */
    perWorker?: Record<string, WorkerTotals>;
  };
  lastSegment: SegmentSummary | null;
  /** Read at the end of each segment, so the status query alone answers "is it healthy?". */
  health: { slotLagBytes: number | null; orphans: number; deadLetters: number; at: string } | null;
  maxEventTime: string | null;
  openDays: string[];
  closedDays: { date: string; by: string }[];
  error: string | null;
  continuedRuns: number;
  /** Chunks of a fanned-out initial snapshot loaded so far, of how many. */
  snapshotChunks?: { done: number; total: number };
  /** The task queue of the worker holding the replication stream: the next segment goes there (capture affinity). */
  captureQueue?: string;
  /** The verifyWorkflow started to fill unfilled ODS columns, until a segment finds none left. */
  columnFill?: { workflowId: string; startedAt: string };
};

export type RecomputeInput = { date?: string; pipelineId?: string; timeZone?: string };

/** Days `from`..`to` (inclusive), at most `concurrency` at a time, each day an activity any worker may take. */
export type RecomputeRangeInput = { from: string; to: string; pipelineId?: string; concurrency?: number };
export type RecomputeRangeResult = { days: RecomputeResult[]; drift: number };
export type RangeProgress = { done: number; total: number; running: string[] };

export type RecomputeResult = {
  date: string;
  partitions: number;
  statsChanged: number;
  drift: number;
  revisions: number;
};

export type StopRequest = { dropSlot?: boolean };

export type VerifyLayerChoice = 'ods' | 'dwd' | 'dws' | 'all';
/** `repair`: re-read what differs from the source and apply it while the pipeline streams, then verify again. */
export type VerifyInput = { pipelineId?: string; layer?: VerifyLayerChoice; repair?: boolean };

/** What a verify found: equal, or the number of differing keys (ODS, DWD) or partitions (DWS) per table. */
export type VerifySummary = {
  pipelineId: string;
  equal: boolean;
  seconds: number;
  rechecks: number;
  mismatched: Record<string, number>;
  /**
   * With `repair` and a difference: what the first comparison found per table, and the repairs per table and
   * action (inserted, updated, deleted, recomputed, skipped). `equal` and `mismatched` are then after repairing.
   */
  repair?: {
    rounds: number;
    found: Record<string, number>;
    repaired: Record<string, Record<string, number>>;
  };
};

/** What the initial snapshot loaded, and where streaming starts. */
export type SnapshotSummary = {
  consistentLsn: string;
  rows: Record<string, number>;
  seconds: number;
  /** Days of the valid consumptions loaded: the windows the workflow opens. */
  days: string[];
};

/** What one capture segment did, with the health figures read at its end. */
export type CaptureSegmentResult = {
  confirmedLsn: string;
  applied: number;
  skipped: number;
  batches: number;
  deadLetters: number;
  perTable: { power_user: number; power_consumption: number };
  writeMs: number;
  maxEventTime: string | null;
  days: string[];
  seconds: number;
  dwsRefreshes: number;
  revisions: number;
  refreshMs: number;
  slotLagBytes: number | null;
  orphans: number;
  deadLettersTotal: number;
  /**
   * ODS columns whose older rows wait for values only the source has (a volatile default rewrote the source table,
   * without changes in the WAL); absent in histories from before.
   */
  unfilledColumns?: number;
  /** The worker that ran the segment and keeps its stream parked; absent in histories from before affinity. */
  worker?: CaptureWorker;
};

export type WorkerTotals = { applied: number; segments: number; lastAt: string };

/** A worker's identity and the task queue only it polls. */
export type CaptureWorker = { identity: string; taskQueue: string };

export type DayWindowResult = {
  date: string;
  partitions: number;
  statsChanged: number;
  revisions: number;
  lateEvents?: number;
  newlyClosed?: boolean;
};

/**
 * The activities the workflows call, by name and shape: the worker's implementation is checked against this at
 * compile time, and the workflows depend on it alone (never on the activity modules).
 */
export interface PipelineActivities {
  validatePipelineInput(input: unknown): Promise<PipelineConfig>;
  validateRecomputeInput(input: unknown): Promise<RecomputeInput & { pipelineId: string }>;
  preparePipeline(config: PipelineConfig): Promise<{ phase: string; confirmedLsn: string }>;
  snapshotSource(config: PipelineConfig): Promise<SnapshotSummary>;
  /** Fanned-out snapshot: holds the exported snapshot until every chunk is loaded; returns where streaming starts. */
  holdSnapshotExport(config: PipelineConfig, snapshotId: string): Promise<{ consistentLsn: string }>;
  /**
   * The chunks of a snapshot once its holder has planned them, as consecutive groups in load order: users before
   * consumptions, whose DWD rows are enriched from the users loaded.
   */
  awaitSnapshotPlan(
    config: PipelineConfig,
    snapshotId: string,
  ): Promise<{ chunks: number; groups: number[] }>;
  /** Loads one chunk (a no-op returning 0 rows when an earlier attempt did). */
  loadSnapshotChunk(config: PipelineConfig, snapshotId: string, chunkNo: number): Promise<{ rows: number }>;
  /** Commits the end of a fanned-out snapshot and builds DWS from what the chunks loaded. */
  finishSnapshotFanOut(config: PipelineConfig, snapshotId: string): Promise<SnapshotSummary>;
  captureChanges(config: PipelineConfig): Promise<CaptureSegmentResult>;
  closeDayWindowActivity(input: {
    pipelineId: string;
    date: string;
    closedBy: string;
  }): Promise<DayWindowResult>;
  recomputeDayActivity(input: { pipelineId: string; date: string }): Promise<RecomputeResult>;
  dropPipelineSlot(config: PipelineConfig): Promise<{ slotDropped: boolean; publicationDropped: boolean }>;
  validateVerifyInput(input: unknown): Promise<Required<VerifyInput>>;
  validateRecomputeRangeInput(input: unknown): Promise<Required<RecomputeRangeInput>>;
  verifyWarehouseActivity(input: Required<VerifyInput>): Promise<VerifySummary>;
}

export const statusQuery = defineQuery<PipelineState>('status');
/** recomputeRangeWorkflow: days done, of how many, and the days running now. */
export const rangeProgressQuery = defineQuery<RangeProgress>('progress');

/**
 * Pause, resume and stop exist twice under the same names: as Updates, which return the state once the change
 * took effect, and as Signals, which return at once. Temporal keeps signal and update handlers apart, so the
 * names do not clash; the signals stay for recorded histories and `temporal workflow signal` users.
 *
 * pause: returns once the running segment has flushed and released the slot (phase 'paused'; 'failed' if the
 * pipeline had already stopped capturing on an error). Rejected while stopping.
 */
export const pauseUpdate = defineUpdate<PipelineState>('pause');
/**
 * resume: returns once a new capture segment is scheduled (phase 'streaming'); at once when nothing was paused.
 * Rejected while stopping. A pause or resume overridden by a later request returns at that request.
 */
export const resumeUpdate = defineUpdate<PipelineState>('resume');
/**
 * stop: returns the final state (phase 'stopped', slot dropped if asked); the workflow completes right after. The
 * request may be left out (`temporal workflow update execute --name stop`), the handler treats that as {}.
 */
export const stopUpdate = defineUpdate<PipelineState, [StopRequest]>('stop');

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const stopSignal = defineSignal<[StopRequest?]>('stop');
