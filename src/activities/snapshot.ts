import { Context, log } from '@temporalio/activity';
import { runSnapshot, type SnapshotOptions, type SnapshotResult } from '../cdc/snapshot';
import type { AppConfig } from '../config';
import { PgSnapshotSink } from '../sink/snapshot-load';
import type { PipelineConfig } from '../workflows/contract';
import type { ActivityDeps } from './deps';

export const snapshotOptions = (cfg: AppConfig, config: PipelineConfig): SnapshotOptions => ({
  slotName: config.slotName,
  plugin: config.plugin,
  sourceUrl: cfg.sourceUrl,
  chunkRows: config.snapshotChunkRows,
});

/** Schema-evolution messages of a snapshot, in the activity's log with the pipeline id. */
export const columnLog =
  (config: PipelineConfig) => (level: 'info' | 'warn', message: string, fields: object) =>
    log[level](message, { pipelineId: config.pipelineId, ...fields });

/** The initial load as one activity: runs recorded before the snapshot was fanned out (snapshot-fan-out.ts). */
export function snapshotActivities({ cfg, sink, streams }: ActivityDeps) {
  return {
    async snapshotSource(config: PipelineConfig): Promise<SnapshotResult> {
      await streams.close(config.slotName); // the slot is re-created with the snapshot
      const ctx = Context.current();
      const result = await runSnapshot(
        new PgSnapshotSink(sink, config.pipelineId, columnLog(config)),
        snapshotOptions(cfg, config),
        (rows) => ctx.heartbeat({ rows }),
      );
      // DWS of the marked partitions is rebuilt by the first segment's refresher (or a window close), beside the
      // stream: the segment meanwhile decodes the WAL the snapshot's own sink writes left behind the slot.
      log.info('snapshot done', {
        pipelineId: config.pipelineId,
        rows: result.rows,
        seconds: result.seconds,
      });
      return result;
    },
  };
}
