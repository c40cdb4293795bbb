import type { Command } from 'commander';
import { ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { WorkflowType } from '../workflows/contract';
import { say } from './output';
import { config, withTemporal } from './shared';

export const SCHEDULE_ID = 'stategrid-daily-recompute';
export const VERIFY_SCHEDULE_ID = 'stategrid-daily-verify';

/** The two daily schedules: recompute of the previous day, then a verify of the whole warehouse. */
const SCHEDULES = [
  { id: SCHEDULE_ID, workflowType: WorkflowType.recompute, what: 'recomputes the previous day' },
  {
    id: VERIFY_SCHEDULE_ID,
    workflowType: WorkflowType.verify,
    what: 'verifies the warehouse against its source',
  },
] as const;

async function create(o: { cron: string; verifyCron: string; id: string }): Promise<void> {
  const cfg = config();
  await withTemporal(async (client) => {
    for (const s of SCHEDULES) {
      const cron = s.id === SCHEDULE_ID ? o.cron : o.verifyCron;
      const args =
        s.id === SCHEDULE_ID ? [{ pipelineId: o.id, timeZone: cfg.timeZone }] : [{ pipelineId: o.id }];
      await client.schedule.create({
        scheduleId: s.id,
        spec: { cronExpressions: [cron], timezone: cfg.timeZone },
        action: {
          type: 'startWorkflow',
          workflowType: s.workflowType,
          taskQueue: cfg.taskQueue,
          workflowId: `${s.id}-${o.id}`,
          args,
        },
        policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
      });
      say(`schedule ${s.id} created: '${cron}' in ${cfg.timeZone}, ${s.what}`);
    }
  });
}

async function describe(): Promise<void> {
  await withTemporal(async (client) => {
    for (const s of SCHEDULES) {
      try {
        const d = await client.schedule.getHandle(s.id).describe();
        say(`schedule ${s.id}: ${d.state.paused ? 'paused' : 'active'}`);
        say(`  spec: ${JSON.stringify(d.spec)}`);
        say(`  next runs: ${d.info.nextActionTimes.map((t) => t.toISOString()).join(', ')}`);
        say(`  recent runs: ${d.info.recentActions.length}`);
      } catch (err) {
        if (!(err instanceof ScheduleNotFoundError)) throw err;
        console.error(`schedule ${s.id} does not exist (stategrid schedule create)`);
        process.exitCode = 1;
      }
    }
  });
}

async function remove(): Promise<void> {
  await withTemporal(async (client) => {
    for (const s of SCHEDULES) {
      try {
        await client.schedule.getHandle(s.id).delete();
        say(`schedule ${s.id} deleted`);
      } catch (err) {
        if (!(err instanceof ScheduleNotFoundError)) throw err;
      }
    }
  });
}

/** `stategrid schedule create|describe|delete`: the daily recompute and verify schedules. */
export function registerSchedule(program: Command): void {
  const schedule = program.command('schedule').description('the daily recompute and verify schedules');
  schedule
    .command('create')
    .option('--cron <expr>', 'cron expression of the recompute', '0 1 * * *')
    .option('--verify-cron <expr>', 'cron expression of the verify', '0 2 * * *')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(create);
  schedule.command('describe').action(describe);
  schedule.command('delete').action(remove);
}
