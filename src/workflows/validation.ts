import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';
import { ErrorType } from './contract';

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
