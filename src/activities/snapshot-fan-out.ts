import { ApplicationFailure, Context, log } from '@temporalio/activity';
import {
  holdExportedSnapshot,
  loadPlannedChunk,
  SnapshotLostError,
  type SnapshotResult,
} from '../cdc/snapshot';
import { SOURCE_TABLES, type SourceTable } from '../schema/tables';
import { chunkTotals, readPlan, startChunk, writePlan, type SnapshotPlan } from '../sink/snapshot-chunks';
import { PgSnapshotSink } from '../sink/snapshot-load';
import { ErrorType, type PipelineConfig } from '../workflows/contract';
import type { ActivityDeps } from './deps';
import { beating } from './heartbeat';
import { columnLog, snapshotOptions } from './snapshot';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The initial snapshot fanned out: one holder of the exported snapshot, chunk loads on any worker, then the
 * finish. The chunk plan and each chunk's completion live in the sink (stategrid_snapshot_chunk), so a chunk lost
 * with its worker is loaded again elsewhere and finished ones are never redone.
 */
export function snapshotFanOutActivities({ cfg, sink, streams, worker }: ActivityDeps) {
  const plans = new Map<string, SnapshotPlan>();
  const planOf = async (config: PipelineConfig, snapshotId: string): Promise<SnapshotPlan | null> => {
    const cached = plans.get(snapshotId);
    if (cached) return cached;
    const plan = await readPlan(sink, config.pipelineId, snapshotId);
    if (plan) plans.set(snapshotId, plan);
    return plan;
  };

  return {
    async holdSnapshotExport(config: PipelineConfig, snapshotId: string): Promise<{ consistentLsn: string }> {
      await streams.close(config.slotName);
      const ctx = Context.current();
      return beating(async () => {
        const exported = await holdExportedSnapshot(
          new PgSnapshotSink(sink, config.pipelineId, columnLog(config)),
          snapshotOptions(cfg, config),
          {
            publish: (s) =>
              writePlan(sink, {
                pipelineId: config.pipelineId,
                snapshotId,
                epoch: s.epoch,
                snapshotName: s.snapshotName,
                snapshotLsn: s.consistentLsn,
                chunks: s.chunks.map((c, chunkNo) => ({ ...c, chunkNo })),
              }),
            untilLoaded: async () => {
              for (;;) {
                const t = await chunkTotals(sink, config.pipelineId, snapshotId);
                if (t.done === t.chunks) return;
                await Promise.race([sleep(250), ctx.cancelled]);
              }
            },
          },
        );
        log.info('exported snapshot released: every chunk loaded', {
          pipelineId: config.pipelineId,
          snapshotId,
        });
        return { consistentLsn: exported.consistentLsn };
      });
    },

    async awaitSnapshotPlan(
      config: PipelineConfig,
      snapshotId: string,
    ): Promise<{ chunks: number; groups: number[] }> {
      return beating(async () => {
        for (;;) {
          const plan = await planOf(config, snapshotId);
          if (plan)
            return {
              chunks: plan.chunks.length,
              groups: SOURCE_TABLES.map((t) => plan.chunks.filter((c) => c.table === t).length),
            };
          await Promise.race([sleep(250), Context.current().cancelled]);
        }
      });
    },

    async loadSnapshotChunk(
      config: PipelineConfig,
      snapshotId: string,
      chunkNo: number,
    ): Promise<{ rows: number }> {
      const plan = await planOf(config, snapshotId);
      if (!plan) throw new Error(`snapshot ${snapshotId} has no plan`);
      const chunk = plan.chunks[chunkNo];
      if (await startChunk(sink, plan, chunkNo, worker.identity)) return { rows: 0 };
      const snapshotSink = new PgSnapshotSink(sink, config.pipelineId, columnLog(config));
      await snapshotSink.join(plan.epoch, { [chunk.table]: chunk.columns } as Record<SourceTable, string[]>);
      try {
        const loaded = await beating(() =>
          loadPlannedChunk(
            snapshotSink,
            cfg.sourceUrl,
            { snapshotName: plan.snapshotName, consistentLsn: plan.snapshotLsn },
            { ...chunk, snapshotId, chunkNo },
          ),
        );
        return { rows: loaded?.rows ?? 0 };
      } catch (err) {
        if (err instanceof SnapshotLostError)
          throw ApplicationFailure.nonRetryable(err.message, ErrorType.SnapshotLost);
        throw err;
      }
    },

    async finishSnapshotFanOut(config: PipelineConfig, snapshotId: string): Promise<SnapshotResult> {
      const plan = await planOf(config, snapshotId);
      const totals = await chunkTotals(sink, config.pipelineId, snapshotId);
      if (!plan || totals.done !== totals.chunks)
        throw new Error(`snapshot ${snapshotId}: ${totals.done} of ${totals.chunks} chunks loaded`);
      const rows = Object.values(totals.rows).reduce((a, b) => a + b, 0);
      const finishing = new PgSnapshotSink(sink, config.pipelineId);
      await finishing.join(plan.epoch, {});
      await finishing.finish(plan.snapshotLsn, rows, totals.maxEventTime);
      // DWS of the marked partitions is rebuilt by the first segment's refresher (or a window close), beside the
      // stream: the segment meanwhile decodes the WAL the snapshot's own sink writes left behind the slot.
      const seconds = totals.seconds;
      log.info('snapshot done', {
        pipelineId: config.pipelineId,
        rows: totals.rows,
        seconds,
        chunks: totals.chunks,
      });
      return { consistentLsn: plan.snapshotLsn, rows: totals.rows, seconds, days: totals.days };
    },
  };
}
