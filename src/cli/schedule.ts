import type { Command } from 'commander';
import { ScheduleNotFoundError } from '@temporalio/client';
import {
  createDailySchedules,
  SCHEDULE_ID,
  SCHEDULES,
  VERIFY_SCHEDULE_ID,
  type ScheduleCrons,
} from '../control/schedules';
import { say } from './output';
import { rangeOptions, recomputeRange, type RangeOptions } from './recompute';
import { config, withTemporal } from './shared';

export { SCHEDULE_ID, VERIFY_SCHEDULE_ID };

async function create(o: ScheduleCrons & { id: string }): Promise<void> {
  const cfg = config();
  await withTemporal(async (client) => {
    for (const s of await createDailySchedules(cfg, client, o.id, o))
      say(`schedule ${s.id} created: '${s.cron}' in ${cfg.timeZone}, ${s.what}`);
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
  rangeOptions(
    schedule
      .command('backfill')
      .description(
        'recompute the days a schedule missed (--from..--to) in parallel, bounded; `temporal schedule backfill` of the recompute schedule needs --overlap-policy BufferAll or AllowAll',
      ),
  ).action(async (o: RangeOptions) => {
    await recomputeRange(o, `${SCHEDULE_ID}-backfill`);
  });
  schedule.command('describe').action(describe);
  schedule.command('delete').action(remove);
}
