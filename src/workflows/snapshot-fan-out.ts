import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  log,
  proxyActivities,
  uuid4,
} from '@temporalio/workflow';
import { ErrorType, type PipelineActivities, type PipelineConfig, type SnapshotSummary } from './contract';

// The holder gets one attempt: when it dies, its exported snapshot dies with it and only a new one can go on.
const holder = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '12 hours',
  heartbeatTimeout: '10 seconds',
  retry: { maximumAttempts: 1 },
});
const planner = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '10 seconds',
  retry: { maximumAttempts: 1 },
});
// A chunk lost with its worker (no heartbeat) is retried on any other worker; chunks already done are not redone.
const chunks = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '15 seconds',
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: [ErrorType.SnapshotLost] },
});
const finisher = proxyActivities<PipelineActivities>({
  startToCloseTimeout: '2 hours',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
});

const ATTEMPTS = 5;

/**
 * The initial snapshot fanned out over the workers: one activity holds the exported snapshot and plans key-range
 * chunks, `snapshotParallelism` chunk activities load them on whichever workers take them, then the end of the
 * snapshot is committed. When the holder is lost, so is its snapshot: the whole snapshot starts over.
 */
export async function fannedOutSnapshot(
  config: PipelineConfig,
  onChunk: (done: number, total: number) => void,
): Promise<SnapshotSummary> {
  for (let attempt = 1; ; attempt++) {
    const scope = new CancellationScope();
    try {
      return await scope.run(() => oneSnapshot(config, uuid4(), onChunk));
    } catch (err) {
      scope.cancel();
      if (attempt >= ATTEMPTS || !exportLost(err)) throw err;
      log.warn('the exported snapshot was lost with its holder; the snapshot starts over', { attempt });
    }
  }
}

async function oneSnapshot(
  config: PipelineConfig,
  snapshotId: string,
  onChunk: (done: number, total: number) => void,
): Promise<SnapshotSummary> {
  const held = holder.holdSnapshotExport.executeWithOptions(
    { summary: `hold the exported snapshot of slot ${config.slotName} until every chunk is loaded` },
    [config, snapshotId],
  );
  // Settles only if the holder fails before the chunks are done: that ends this attempt.
  const holderLost = new Promise<never>((_, reject) => held.catch(reject));
  holderLost.catch(() => undefined); // observed through the races below; unobserved once the chunks are done
  const { chunks: total, groups } = await Promise.race([
    planner.awaitSnapshotPlan.executeWithOptions({ summary: `plan of snapshot ${snapshotId}` }, [
      config,
      snapshotId,
    ]),
    holderLost,
  ]);
  let done = 0;
  // Group by group (users, then consumptions: details are enriched from the users loaded), chunks in parallel.
  let first = 0;
  for (const size of groups) {
    let next = first;
    const end = first + size;
    const lane = async () => {
      while (next < end) {
        const chunkNo = next++;
        await chunks.loadSnapshotChunk.executeWithOptions(
          { summary: `snapshot chunk ${chunkNo + 1}/${total}` },
          [config, snapshotId, chunkNo],
        );
        onChunk(++done, total);
      }
    };
    const lanes = Array.from({ length: Math.min(config.snapshotParallelism ?? 4, size) }, lane);
    await Promise.race([Promise.all(lanes), holderLost]);
    first = end;
  }
  await held;
  return finisher.finishSnapshotFanOut.executeWithOptions(
    { summary: `finish snapshot ${snapshotId}: DWS from ${total} chunks` },
    [config, snapshotId],
  );
}

/** The holder failed, or a chunk could no longer import the exported snapshot. */
function exportLost(err: unknown): boolean {
  if (!(err instanceof ActivityFailure)) return false;
  if (err.activityType === 'holdSnapshotExport') return true;
  return err.cause instanceof ApplicationFailure && err.cause.type === ErrorType.SnapshotLost;
}
