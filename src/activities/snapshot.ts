import { Context, log } from '@temporalio/activity';
import { runSnapshot, type SnapshotResult } from '../cdc/snapshot';
import { refreshDirtyPartitions } from '../sink/aggregates';
import { PgSnapshotSink } from '../sink/snapshot-load';
import type { PipelineConfig } from '../workflows/contract';
import type { ActivityDeps } from './deps';

/** The initial load: source snapshot reader into the sink's chunk loader, then DWS for everything loaded. */
export function snapshotActivities({ cfg, sink, streams }: ActivityDeps) {
  return {
    async snapshotSource(config: PipelineConfig): Promise<SnapshotResult> {
      await streams.close(config.slotName); // the slot is re-created with the snapshot
      const ctx = Context.current();
      const result = await runSnapshot(
        new PgSnapshotSink(sink, config.pipelineId, (level, message, fields) =>
          log[level](message, { pipelineId: config.pipelineId, ...fields }),
        ),
        {
          slotName: config.slotName,
          plugin: config.plugin,
          sourceUrl: cfg.sourceUrl,
          chunkRows: config.snapshotChunkRows,
        },
        (rows) => ctx.heartbeat({ rows }),
      );
      await refreshDirtyPartitions(sink, config.pipelineId);
      log.info('snapshot done', {
        pipelineId: config.pipelineId,
        rows: result.rows,
        seconds: result.seconds,
      });
      return result;
    },
  };
}
