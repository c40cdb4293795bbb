import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { captureSegment, type CaptureProgress } from '../cdc/capture';
import { parseLsn } from '../cdc/changes';
import { PublicationAlteredError, SlotMissingError, slotFigures } from '../cdc/source-admin';
import { slotDecodedBytes, slotLagBytes, slotSpilledBytes } from '../observability/metrics';
import { readCheckpoint } from '../sink/checkpoint';
import { sinkHealth } from '../sink/status';
import { PgBatchSink, StaleCaptureError } from '../sink/writer';
import {
  DEFAULT_RESTART_MARK_MS,
  ErrorType,
  type CaptureSegmentResult,
  type PipelineConfig,
} from '../workflows/contract';
import type { ActivityDeps } from './deps';
import { heartbeatEverySecond } from './heartbeat';

/** Errors the workflow must not retry: each needs an operator's decision (see its message). */
const NON_RETRYABLE: [new (...args: never[]) => Error, string][] = [
  [SlotMissingError, ErrorType.SlotMissing],
  [PublicationAlteredError, ErrorType.PublicationAltered],
  [StaleCaptureError, ErrorType.StaleCapture],
];

/**
 * A bounded capture segment; the workflow loops over segments so its history shows progress. Wires the change
 * source (this worker's replication stream of the slot), the batch sink at the checkpoint's epoch, and the DWS
 * refresher that follows the sink beside the segment.
 */
export function captureActivities({ cfg, sink, streams, refreshers, worker }: ActivityDeps) {
  return {
    async captureChanges(config: PipelineConfig): Promise<CaptureSegmentResult> {
      let latest: CaptureProgress | undefined;
      // Beating from the first moment to the return: under load the reads before and after the segment alone
      // could outlast a segment's short heartbeat timeout.
      const stopHeartbeats = heartbeatEverySecond(() => latest);
      try {
        return await segment(config, (p) => (latest = p));
      } finally {
        stopHeartbeats();
      }
    },
  };

  async function segment(
    config: PipelineConfig,
    beat: (p: CaptureProgress) => void,
  ): Promise<CaptureSegmentResult> {
    const ctx = Context.current();
    const cp = await readCheckpoint(sink, config.pipelineId);
    if (!cp || cp.phase !== 'streaming') {
      throw ApplicationFailure.nonRetryable(
        `pipeline ${config.pipelineId} has no completed snapshot (phase ${cp?.phase ?? 'missing'})`,
        ErrorType.NotReady,
      );
    }
    const refresher = refreshers.forPipeline(config.pipelineId);
    refresher.start(config.dwsRefreshMs);
    let progress: CaptureProgress;
    let cancelled = false;
    const segmentEnds = Promise.race([ctx.cancelled, refresher.failedOnce]);
    // A cancellation (pause, or a heartbeat timeout) can come while the stream is still being opened, before
    // the segment listens: unhandled, its rejection would end the worker process.
    segmentEnds.catch(() => undefined);
    ctx.cancelled.catch(() => (cancelled = true));
    try {
      progress = await captureSegment(
        {
          park: streams,
          sink: new PgBatchSink(sink, config.pipelineId, cp.epoch, (level, message, fields) =>
            log[level](message, { pipelineId: config.pipelineId, ...fields }),
          ),
        },
        {
          pipelineId: config.pipelineId,
          slotName: config.slotName,
          publication: config.publication,
          plugin: config.plugin,
          sourceUrl: cfg.sourceUrl,
          decodingWorkMemMb: cfg.decodingWorkMemMb,
        },
        { lsn: parseLsn(cp.confirmed_lsn), epoch: cp.epoch },
        {
          maxSeconds: config.segmentSeconds,
          maxBatchRows: config.batchRows,
          maxBatchDelayMs: config.batchDelayMs,
          restartMarkMs: config.restartMarkMs ?? DEFAULT_RESTART_MARK_MS,
        },
        {
          heartbeat: beat,
          cancelled: segmentEnds,
          log: (msg, extra) => log.info(msg, { pipelineId: config.pipelineId, ...extra }),
          debug: (msg, extra) => log.debug(msg, { pipelineId: config.pipelineId, ...extra }),
          caughtUp: () => refresher.refreshSoon(),
        },
      );
      // Pausing or stopping: no segment follows soon, so leave DWS current now.
      await refresher.stop(cancelled);
    } catch (err) {
      await refresher.stop(false).catch(() => undefined);
      for (const [type, name] of NON_RETRYABLE) {
        if (err instanceof type) throw ApplicationFailure.nonRetryable(err.message, name);
      }
      throw err;
    }
    const slot = await slotFigures(cfg.sourceUrl, config.slotName);
    if (slot.lagBytes !== null) slotLagBytes.set({ pipeline: config.pipelineId }, slot.lagBytes);
    if (slot.decoded) {
      slotDecodedBytes.set({ pipeline: config.pipelineId }, slot.decoded.bytes);
      slotSpilledBytes.set({ pipeline: config.pipelineId }, slot.decoded.spilledBytes);
    }
    const health = await sinkHealth(sink);
    return {
      ...progress,
      days: [...new Set([...progress.days, ...health.provisionalDays])],
      ...refresher.takeStats(),
      slotLagBytes: slot.lagBytes,
      orphans: health.orphans,
      deadLettersTotal: health.deadLetters,
      unfilledColumns: health.unfilledColumns,
      worker,
    };
  }
}
