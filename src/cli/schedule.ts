import type { Command } from 'commander';
import { ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { WorkflowType } from '../workflows/contract';
import { say } from './output';
import { config, withTemporal } from './shared';

export const SCHEDULE_ID = 'stategrid-daily-recompute';

async function create(o: { cron: string; id: string }): Promise<void> {
  const cfg = config();
  await withTemporal(async (client) => {
    await client.schedule.create({
      scheduleId: SCHEDULE_ID,
      spec: { cronExpressions: [o.cron], timezone: cfg.timeZone },
      action: {
        type: 'startWorkflow',
        workflowType: WorkflowType.recompute,
        taskQueue: cfg.taskQueue,
        workflowId: `stategrid-daily-recompute-${o.id}`,
        args: [{ pipelineId: o.id, timeZone: cfg.timeZone }],
      },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
    });
    say(`schedule ${SCHEDULE_ID} created: '${o.cron}' in ${cfg.timeZone}, recomputes the previous day`);
  });
}

async function describe(): Promise<void> {
  await withTemporal(async (client) => {
    try {
      const d = await client.schedule.getHandle(SCHEDULE_ID).describe();
      say(`schedule ${SCHEDULE_ID}: ${d.state.paused ? 'paused' : 'active'}`);
      say(`  spec: ${JSON.stringify(d.spec)}`);
      say(`  next runs: ${d.info.nextActionTimes.map((t) => t.toISOString()).join(', ')}`);
      say(`  recent runs: ${d.info.recentActions.length}`);
    } catch (err) {
      if (err instanceof ScheduleNotFoundError) {
        console.error(`schedule ${SCHEDULE_ID} does not exist (stategrid schedule create)`);
        process.exitCode = 1;
      } else throw err;
    }
  });
}

/** `stategrid schedule create|describe|delete`: the daily recomputation schedule. */
export function registerSchedule(program: Command): void {
  const schedule = program.command('schedule').description('the daily recomputation schedule');
  schedule
    .command('create')
    .option('--cron <expr>', 'cron expression', '0 1 * * *')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(create);
  schedule.command('describe').action(describe);
  schedule.command('delete').action(async () => {
    await withTemporal(async (client) => {
      await client.schedule.getHandle(SCHEDULE_ID).delete();
      say(`schedule ${SCHEDULE_ID} deleted`);
    });
  });
}
