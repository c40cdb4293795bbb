import { dropPublication, dropSlot } from '../cdc/source-admin';
import { withClient } from '../db/client';
import { resetCheckpoint } from '../sink/checkpoint';
import type { PipelineConfig } from '../workflows/contract';
import type { ActivityDeps } from './deps';

export function slotActivities({ cfg, sink, streams }: ActivityDeps) {
  return {
    /** `pipeline stop --drop-slot`: removes the slot (and our publication) so the source keeps no WAL for us. */
    async dropPipelineSlot(
      config: PipelineConfig,
    ): Promise<{ slotDropped: boolean; publicationDropped: boolean }> {
      await streams.close(config.slotName);
      const slotDropped = await dropSlot(cfg.sourceUrl, config.slotName);
      const publicationDropped = await withClient(cfg.sourceUrl, (source) =>
        dropPublication(source, config.publication),
      );
      await resetCheckpoint(sink, config.pipelineId, 'new');
      return { slotDropped, publicationDropped };
    },
  };
}
