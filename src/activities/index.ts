import { ApplicationFailure, Context, log } from '@temporalio/activity';
import pg from 'pg';
import {
  closeParkedStream,
  PublicationAlteredError,
  runCaptureSegment,
  SlotMissingError,
  unpublishedTables,
  type CaptureProgress,
} from '../cdc/capture';
import { parseLsn } from '../cdc/changes';
import { dropSlot, runSnapshot, type SnapshotResult } from '../cdc/snapshot';
import type { AppConfig } from '../config';
import { quoteIdent } from '../db/sql';
import { closeDayWindow, recomputeDay } from '../sink/aggregates';
import * as ops from '../sink/ops';
import { StaleCaptureError, type CheckpointRow } from '../sink/writer';
import type { PipelineConfig, RecomputeInput, RecomputeResult } from '../workflows/types';
import { parsePipelineInput, parseRecomputeInput } from './inputs';
import { withClient } from '../db/client';
import { slotFigures } from '../control/pipeline';
import { slotLagBytes } from '../observability/metrics';

/** Activities own all I/O. Built once per worker with its config and sink pool. */
export function createActivities(cfg: AppConfig, sink: pg.Pool) {
  const invalid = (err: unknown) =>
    ApplicationFailure.nonRetryable(err instanceof Error ? err.message : String(err), 'InvalidInput');

  return {
    async validatePipelineInput(input: unknown): Promise<PipelineConfig> {
      try {
        return parsePipelineInput(cfg, input);
      } catch (err) {
        throw invalid(err);
      }
    },

    async validateRecomputeInput(input: unknown): Promise<RecomputeInput & { pipelineId: string }> {
      try {
        return parseRecomputeInput(input);
      } catch (err) {
        throw invalid(err);
      }
    },

    /** Registers the pipeline's checkpoint row; tells whether an initial snapshot is still needed. */
    async preparePipeline(config: PipelineConfig): Promise<{ phase: string; confirmedLsn: string }> {
      await sink.query(ops.ENSURE_CHECKPOINT, [config.pipelineId, config.slotName]);
      const { rows } = await sink.query<CheckpointRow>(ops.READ_CHECKPOINT, [config.pipelineId]);
      const resuming = rows[0].phase === 'streaming' && !config.resync;
      await withClient(cfg.sourceUrl, async (source) => {
        // `stop --drop-slot` removes the publication; a later start brings it back.
        const pub = await source.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [
          config.publication,
        ]);
        if (!pub.rowCount && !resuming) {
          await source.query(
            `CREATE PUBLICATION ${quoteIdent(config.publication)} FOR TABLE power_user, power_consumption`,
          );
        }
        if (config.plugin !== 'pgoutput') return;
        const missing = await unpublishedTables(source, config.publication);
        if (!missing.length) return;
        // Resuming over a gap in the publication would skip changes for good; a new snapshot closes the gap.
        if (resuming)
          throw ApplicationFailure.nonRetryable(
            new PublicationAlteredError(config.publication, missing).message,
            'PublicationAltered',
          );
        for (const table of missing)
          await source.query(
            `ALTER PUBLICATION ${quoteIdent(config.publication)} ADD TABLE ${quoteIdent(table)}`,
          );
      });
      return { phase: rows[0].phase, confirmedLsn: rows[0].confirmed_lsn };
    },

    async snapshotSource(config: PipelineConfig): Promise<SnapshotResult> {
      await closeParkedStream(config.slotName); // the slot is re-created with the snapshot
      const ctx = Context.current();
      const result = await runSnapshot(
        sink,
        {
          pipelineId: config.pipelineId,
          slotName: config.slotName,
          plugin: config.plugin,
          sourceUrl: cfg.sourceUrl,
          chunkRows: config.snapshotChunkRows,
        },
        (rows) => ctx.heartbeat({ rows }),
      );
      log.info('snapshot done', {
        pipelineId: config.pipelineId,
        rows: result.rows,
        seconds: result.seconds,
      });
      return result;
    },

    /** A bounded capture segment; the workflow loops over segments so its history shows progress. */
    async captureChanges(config: PipelineConfig): Promise<CaptureSegmentResult> {
      const ctx = Context.current();
      const { rows } = await sink.query<CheckpointRow>(ops.READ_CHECKPOINT, [config.pipelineId]);
      if (!rows.length || rows[0].phase !== 'streaming') {
        throw ApplicationFailure.nonRetryable(
          `pipeline ${config.pipelineId} has no completed snapshot (phase ${rows[0]?.phase ?? 'missing'})`,
          'NotReady',
        );
      }
      let progress: CaptureProgress;
      try {
        progress = await runCaptureSegment(
          sink,
          {
            pipelineId: config.pipelineId,
            slotName: config.slotName,
            publication: config.publication,
            plugin: config.plugin,
            sourceUrl: cfg.sourceUrl,
            maxSeconds: config.segmentSeconds,
            maxBatchRows: config.batchRows,
            maxBatchDelayMs: config.batchDelayMs,
            dwsRefreshMs: config.dwsRefreshMs,
          },
          parseLsn(rows[0].confirmed_lsn),
          rows[0].epoch,
          {
            heartbeat: (p) => ctx.heartbeat(p),
            cancelled: ctx.cancelled,
            log: (msg, extra) => log.info(msg, { pipelineId: config.pipelineId, ...extra }),
            debug: (msg, extra) => log.debug(msg, { pipelineId: config.pipelineId, ...extra }),
          },
        );
      } catch (err) {
        if (err instanceof SlotMissingError)
          throw ApplicationFailure.nonRetryable(err.message, 'SlotMissing');
        if (err instanceof PublicationAlteredError)
          throw ApplicationFailure.nonRetryable(err.message, 'PublicationAltered');
        if (err instanceof StaleCaptureError)
          throw ApplicationFailure.nonRetryable(err.message, 'StaleCapture');
        throw err;
      }
      const slot = await slotFigures(cfg, config.slotName);
      if (slot.lagBytes !== null) slotLagBytes.set({ pipeline: config.pipelineId }, slot.lagBytes);
      const { rows: health } = await sink.query(
        `SELECT (SELECT count(*) FROM dwd_power_consumption_detail WHERE region_id IS NULL)::int AS orphans,
           (SELECT count(*) FROM stategrid_dead_letter)::int AS dead_letters`,
      );
      return {
        ...progress,
        slotLagBytes: slot.lagBytes,
        orphans: health[0].orphans,
        deadLettersTotal: health[0].dead_letters,
      };
    },

    async closeDayWindowActivity(input: { pipelineId: string; date: string; closedBy: string }) {
      return closeDayWindow(sink, input.pipelineId, input.date, input.closedBy);
    },

    async recomputeDayActivity(input: { pipelineId: string; date: string }): Promise<RecomputeResult> {
      const { rowCount } = await sink.query('SELECT 1 FROM stategrid_checkpoint WHERE pipeline_id = $1', [
        input.pipelineId,
      ]);
      const r = await recomputeDay(sink, rowCount ? input.pipelineId : null, input.date);
      return {
        date: r.date,
        partitions: r.partitions,
        statsChanged: r.statsChanged,
        rankingChanged: r.rankingChanged,
        drift: r.statsChanged + r.rankingChanged,
        revisions: r.revisions,
      };
    },

    /** `pipeline stop --drop-slot`: removes the slot (and our publication) so the source keeps no WAL for us. */
    async dropPipelineSlot(
      config: PipelineConfig,
    ): Promise<{ slotDropped: boolean; publicationDropped: boolean }> {
      await closeParkedStream(config.slotName);
      const slotDropped = await dropSlot(cfg.sourceUrl, config.slotName);
      return withClient(cfg.sourceUrl, async (client) => {
        const res = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [
          config.publication,
        ]);
        if (res.rowCount) await client.query(`DROP PUBLICATION ${quoteIdent(config.publication)}`);
        await sink.query(ops.RESET_CHECKPOINT, [config.pipelineId, 'new']);
        return { slotDropped, publicationDropped: !!res.rowCount };
      });
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;

export type CaptureSegmentResult = CaptureProgress & {
  slotLagBytes: number | null;
  orphans: number;
  deadLettersTotal: number;
};
