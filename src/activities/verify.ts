import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { verifyMismatched, verifyLastRun } from '../observability/metrics';
import { mismatchedPerTable, verifyWarehouse, type VerifyLayer } from '../verify/warehouse';
import { ErrorType, type VerifyInput, type VerifySummary } from '../workflows/contract';
import type { ActivityDeps } from './deps';
import { parseVerifyInput } from './inputs';

const LAYERS: Record<Required<VerifyInput>['layer'], VerifyLayer[]> = {
  ods: ['ods'],
  dwd: ['dwd'],
  dws: ['dws'],
  all: ['ods', 'dwd', 'dws'],
};

/** The warehouse compared with its source, as the scheduled verifyWorkflow runs it. */
export function verifyActivities({ cfg }: ActivityDeps) {
  return {
    async validateVerifyInput(input: unknown): Promise<Required<VerifyInput>> {
      try {
        return parseVerifyInput(input);
      } catch (err) {
        throw ApplicationFailure.nonRetryable(
          err instanceof Error ? err.message : String(err),
          ErrorType.InvalidInput,
        );
      }
    },

    async verifyWarehouseActivity(input: Required<VerifyInput>): Promise<VerifySummary> {
      const ctx = Context.current();
      const report = await verifyWarehouse(cfg, input.pipelineId, LAYERS[input.layer], (step) =>
        ctx.heartbeat({ step }),
      );
      const mismatched = mismatchedPerTable(report);
      for (const t of report.tables) {
        verifyMismatched.set({ pipeline: input.pipelineId, layer: t.layer }, 0);
      }
      for (const t of report.tables)
        verifyMismatched.inc({ pipeline: input.pipelineId, layer: t.layer }, mismatched[t.table]);
      verifyLastRun.set({ pipeline: input.pipelineId }, Date.now() / 1000);
      log.info('verify done', { pipelineId: input.pipelineId, equal: report.equal, mismatched });
      return {
        pipelineId: input.pipelineId,
        equal: report.equal,
        seconds: report.seconds,
        rechecks: report.rechecks,
        mismatched,
      };
    },
  };
}
