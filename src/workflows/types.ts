/** Serialisable workflow inputs and state, shared as types with activities and the CLI. */

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
  allowedLatenessMinutes: number;
  closeGraceMinutes: number;
  /** Continue-as-new once a run's history has this many events (keeps each run's history bounded). */
  maxHistoryEvents: number;
  timeZone: string;
};

export type SegmentSummary = {
  applied: number;
  seconds: number;
  rowsPerSecond: number;
  confirmedLsn: string;
  at: string;
};

export type PipelineState = {
  config: PipelineConfig | null;
  phase: 'validating' | 'snapshot' | 'streaming' | 'pausing' | 'paused' | 'stopping' | 'stopped' | 'failed';
  snapshot: { rows: Record<string, number>; seconds: number; consistentLsn: string } | null;
  confirmedLsn: string;
  totals: {
    applied: number;
    deadLetters: number;
    segments: number;
    revisions: number;
    perTable: { power_user: number; power_consumption: number };
  };
  lastSegment: SegmentSummary | null;
  /** Read at the end of each segment, so the status query alone answers "is it healthy?". */
  health: { slotLagBytes: number | null; orphans: number; deadLetters: number; at: string } | null;
  maxEventTime: string | null;
  openDays: string[];
  closedDays: { date: string; by: string }[];
  error: string | null;
  continuedRuns: number;
};

export type RecomputeInput = { date?: string; pipelineId?: string; timeZone?: string };

export type RecomputeResult = {
  date: string;
  partitions: number;
  statsChanged: number;
  rankingChanged: number;
  drift: number;
  revisions: number;
};
