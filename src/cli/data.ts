import { InvalidArgumentError, type Command } from 'commander';
import type { AppConfig } from '../config';
import { insertTestData } from '../data/generate';
import { withClient } from '../db/client';
import { previousLocalDay } from '../workflows/window-time';
import { say } from './output';
import { config, int, isoDate } from './shared';

function todayIn(timeZone: string): string {
  return previousLocalDay(Date.now() + 86_400_000, timeZone);
}

export type InsertOptions = { users: number; records: number; days: number; seed: number; baseDate?: string };

/** Deterministic test data in the source; the latest day defaults to today in the configured time zone. */
export async function dataInsert(cfg: AppConfig, o: InsertOptions): Promise<void> {
  await withClient(cfg.sourceUrl, async (source) => {
    const r = await insertTestData(source, { ...o, baseDate: o.baseDate ?? todayIn(cfg.timeZone) });
    say(`inserted ${r.users} new users and ${r.records} consumption records`);
  });
}

/** `stategrid data insert`. */
export function registerData(program: Command): void {
  program
    .command('data')
    .description('test data')
    .command('insert')
    .option('--users <n>', 'users', int('--users'), 20)
    .option('--records <n>', 'consumption records', int('--records'), 2000)
    .option('--days <n>', 'days back from the base date', int('--days'), 7)
    .option('--seed <n>', 'seed', int('--seed'), 42)
    .option('--base-date <date>', 'latest day of the data (default: today in STATEGRID_TIME_ZONE)', isoDate)
    .action(async (o) => {
      if (o.days < 1) throw new InvalidArgumentError('--days must be at least 1');
      await dataInsert(config(), o);
    });
}
