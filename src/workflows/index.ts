/** Workflow entry point for the worker bundle: one workflow per file. */
export * from './cdcPipelineWorkflow';
export * from './dailyRecomputeWorkflow';
export * from './verifyWorkflow';
export * from './recomputeRangeWorkflow';
