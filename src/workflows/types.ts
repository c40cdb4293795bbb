/** Kept so existing imports compile: the contract lives in ./contract. */
export type {
  PipelineConfig,
  PipelinePhase,
  PipelineState,
  RecomputeInput,
  RecomputeResult,
  SegmentSummary,
  StopRequest,
} from './contract';
