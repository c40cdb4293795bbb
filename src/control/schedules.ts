import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { AppConfig } from '../config';
import { WorkflowType } from '../workflows/contract';

export const SCHEDULE_ID = 'stategrid-daily-recompute';
export const VERIFY_SCHEDULE_ID = 'stategrid-daily-verify';

/** The two daily schedules: recompute of the previous day, then a verify of the whole warehouse. */
export const SCHEDULES = [
  { id: SCHEDULE_ID, workflowType: WorkflowType.recompute, what: 'recomputes the previous day' },
  {
    id: VERIFY_SCHEDULE_ID,
    workflowType: WorkflowType.verify,
    what: 'verifies the warehouse against its source',
  },
] as const;

export type ScheduleCrons = { cron: string; verifyCron: string };

/** Creates both schedules for one pipeline, in the configured time zone; returns what was created. */
export async function createDailySchedules(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
  crons: ScheduleCrons,
): Promise<{ id: string; cron: string; what: string }[]> {
  const created = [];
  for (const s of SCHEDULES) {
    const recompute = s.id === SCHEDULE_ID;
    const cron = recompute ? crons.cron : crons.verifyCron;
    await client.schedule.create({
      scheduleId: s.id,
      spec: { cronExpressions: [cron], timezone: cfg.timeZone },
      action: {
        type: 'startWorkflow',
        workflowType: s.workflowType,
        taskQueue: cfg.taskQueue,
        workflowId: `${s.id}-${pipelineId}`,
        args: recompute ? [{ pipelineId, timeZone: cfg.timeZone }] : [{ pipelineId }],
        // Both runs have short histories; a worker killed in one of their workflow tasks holds them this long.
        workflowTaskTimeout: cfg.workflowTaskTimeoutMs,
      },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
    });
    created.push({ id: s.id, cron, what: s.what });
  }
  return created;
}
