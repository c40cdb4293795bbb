import { Context, log } from '@temporalio/activity';
import { repairs, verifyMismatched, verifyLastRun } from '../observability/metrics';
import { LAYERS_OF, mismatchedPerTable, verifyWarehouse } from '../verify/warehouse';
import type { VerifyInput, VerifySummary } from '../workflows/contract';
import type { ActivityDeps } from './deps';

/** The warehouse compared with its source, as the scheduled verifyWorkflow runs it. */
export function verifyActivities({ cfg }: ActivityDeps) {
  return {
    async verifyWarehouseActivity(input: Required<VerifyInput>): Promise<VerifySummary> {
      const ctx = Context.current();
      const report = await verifyWarehouse(
        cfg,
        input.pipelineId,
        LAYERS_OF[input.layer],
        (step) => ctx.heartbeat({ step }),
        { repair: input.repair },
      );
      for (const [table, actions] of Object.entries(report.repair?.repaired ?? {}))
        for (const [action, n] of Object.entries(actions))
          repairs.inc({ pipeline: input.pipelineId, table, action }, n);
      const mismatched = mismatchedPerTable(report);
      const perLayer: Record<string, number> = {};
      for (const t of report.tables) perLayer[t.layer] = (perLayer[t.layer] ?? 0) + mismatched[t.table];
      for (const [layer, n] of Object.entries(perLayer))
        verifyMismatched.set({ pipeline: input.pipelineId, layer }, n);
      verifyLastRun.set({ pipeline: input.pipelineId }, Date.now() / 1000);
      log.info('verify done', {
        pipelineId: input.pipelineId,
        equal: report.equal,
        mismatched,
        repair: report.repair,
      });
      return {
        pipelineId: input.pipelineId,
        equal: report.equal,
        seconds: report.seconds,
        rechecks: report.rechecks,
        mismatched,
        ...(report.repair ? { repair: report.repair } : {}),
      };
    },
  };
}
