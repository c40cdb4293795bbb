import { Context } from '@temporalio/activity';

/**
 * Heartbeats every second, whatever the activity is busy with (a slow write or load included), until the returned
 * function is called: the short heartbeat timeouts of capture segments and snapshot chunks are how a lost worker is
 * noticed, so its work moves to another worker within seconds. `details` is sent with each heartbeat.
 */
export function heartbeatEverySecond(details?: () => unknown): () => void {
  const ctx = Context.current();
  const beat = setInterval(() => ctx.heartbeat(details?.()), 1000);
  return () => clearInterval(beat);
}

/** `work` with heartbeats every second while it runs. */
export async function beating<T>(work: () => Promise<T>): Promise<T> {
  const stop = heartbeatEverySecond();
  try {
    return await work();
  } finally {
    stop();
  }
}
