import { log } from '@temporalio/activity';
import { dwsLostDeltaPartitions } from '../observability/metrics';
import { closeDayWindow, recomputeDay, type DayResult, type DwsWarn } from '../sink/aggregates';
import { readCheckpoint } from '../sink/checkpoint';
import type { RecomputeResult } from '../workflows/contract';
import type { ActivityDeps } from './deps';
import { beating } from './heartbeat';

const warn: DwsWarn = (message, fields) => log.warn(message, fields);

/** A close or recompute may be the DWS writer that finds deltas a crash emptied: counted like a refresh's find. */
function countLostDeltas(pipelineId: string, r: DayResult): DayResult {
  dwsLostDeltaPartitions.inc({ pipeline: pipelineId }, r.lostDeltaPartitions ?? 0);
  return r;
}

/** Day windows: close by watermark or timer, and the whole-day recompute with its drift. */
export function windowActivities({ sink }: ActivityDeps) {
  return {
    async closeDayWindowActivity(input: { pipelineId: string; date: string; closedBy: string }) {
      // Beats so that a close lost with its worker is retried elsewhere within seconds (its heartbeat timeout).
      const r = await beating(() => closeDayWindow(sink, input.pipelineId, input.date, input.closedBy, warn));
      return countLostDeltas(input.pipelineId, r);
    },

    async recomputeDayActivity(input: { pipelineId: string; date: string }): Promise<RecomputeResult> {
      const known = (await readCheckpoint(sink, input.pipelineId)) !== null;
      const r = countLostDeltas(
        input.pipelineId,
        await recomputeDay(sink, known ? input.pipelineId : null, input.date, warn),
      );
      return {
        date: r.date,
        partitions: r.partitions,
        statsChanged: r.statsChanged,
        drift: r.statsChanged + r.totalsDrift,
        revisions: r.revisions,
      };
    },
  };
}
