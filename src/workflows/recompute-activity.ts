import { proxyActivities } from '@temporalio/workflow';
import { ErrorType, type PipelineActivities } from './contract';

/** The day recompute as both recompute workflows call it: one whole-day recompute, retried on transient errors. */
export const recomputeActivities = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '30 minutes',
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});
