import { ActivityFailure, ApplicationFailure, proxyLocalActivities } from '@temporalio/workflow';
import { ErrorType, type PipelineActivities } from './contract';

/** Input validation is pure CPU: a local activity saves a task-queue round trip on every run. */
export const inputValidators = proxyLocalActivities<PipelineActivities>({
  startToCloseTimeout: '10 seconds',
  retry: { maximumAttempts: 3, nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});

/** Runs an input-validation activity and fails the workflow with its message, so the UI/CLI shows the reason. */
export async function validated<T>(validate: () => Promise<T>): Promise<T> {
  try {
    return await validate();
  } catch (err) {
    if (
      err instanceof ActivityFailure &&
      err.cause instanceof ApplicationFailure &&
      err.cause.type === ErrorType.InvalidInput
    ) {
      throw ApplicationFailure.nonRetryable(err.cause.message, ErrorType.InvalidInput);
    }
    throw err;
  }
}
