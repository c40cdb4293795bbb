import { ApplicationFailure } from '@temporalio/activity';
import {
  addToPublication,
  createPublication,
  publicationExists,
  PublicationAlteredError,
  unpublishedTables,
} from '../cdc/source-admin';
import { withClient } from '../db/client';
import { ensureCheckpoint } from '../sink/checkpoint';
import {
  ErrorType,
  type PipelineConfig,
  type RecomputeInput,
  type RecomputeRangeInput,
  type VerifyInput,
} from '../workflows/contract';
import type { ActivityDeps } from './deps';
import {
  parsePipelineInput,
  parseRecomputeInput,
  parseRecomputeRangeInput,
  parseVerifyInput,
} from './inputs';

/** The parsed input, or a non-retryable InvalidInput failure with the parser's message (the run fails with it). */
function validInput<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw ApplicationFailure.nonRetryable(message, ErrorType.InvalidInput);
  }
}

/** Input validation of every workflow, and the pipeline's registration: checkpoint row and publication. */
export function setupActivities({ cfg, sink }: ActivityDeps) {
  return {
    async validatePipelineInput(input: unknown): Promise<PipelineConfig> {
      return validInput(() => parsePipelineInput(cfg, input));
    },

    async validateRecomputeInput(input: unknown): Promise<RecomputeInput & { pipelineId: string }> {
      return validInput(() => parseRecomputeInput(input));
    },

    async validateVerifyInput(input: unknown): Promise<Required<VerifyInput>> {
      return validInput(() => parseVerifyInput(input));
    },

    async validateRecomputeRangeInput(input: unknown): Promise<Required<RecomputeRangeInput>> {
      return validInput(() => parseRecomputeRangeInput(input));
    },

    /** Registers the pipeline's checkpoint row; tells whether an initial snapshot is still needed. */
    async preparePipeline(config: PipelineConfig): Promise<{ phase: string; confirmedLsn: string }> {
      const cp = await ensureCheckpoint(sink, config.pipelineId, config.slotName);
      const resuming = cp.phase === 'streaming' && !config.resync;
      await withClient(cfg.sourceUrl, async (source) => {
        // `stop --drop-slot` removes the publication; a later start brings it back.
        if (!resuming && !(await publicationExists(source, config.publication))) {
          await createPublication(source, config.publication);
        }
        if (config.plugin !== 'pgoutput') return;
        const missing = await unpublishedTables(source, config.publication);
        if (!missing.length) return;
        // Resuming over a gap in the publication would skip changes for good; a new snapshot closes the gap.
        if (resuming) {
          const message = new PublicationAlteredError(config.publication, missing).message;
          throw ApplicationFailure.nonRetryable(message, ErrorType.PublicationAltered);
        }
        for (const table of missing) await addToPublication(source, config.publication, table);
      });
      return { phase: cp.phase, confirmedLsn: cp.confirmed_lsn };
    },
  };
}
