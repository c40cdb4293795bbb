import type { Command } from 'commander';
import type { AppConfig } from '../config';
import { startPipeline, waitCaughtUp } from '../control/pipeline';
import { withClient } from '../db/client';
import { initDatabases } from '../db/init';
import { closedWindowCount, latestDetails, regionDailyStats, topUsersLatestDay } from '../sink/reports';
import { stackUp } from '../stack';
import { dataInsert } from './data';
import { printTable, say } from './output';
import { cdcPassword, config, int, withTemporal } from './shared';

async function printTables(cfg: AppConfig): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    say('');
    printTable('== dws_region_daily_stats ==', await regionDailyStats(sink));
    printTable('== dws_user_ranking (top 3 per region, latest day) ==', await topUsersLatestDay(sink, 3));
    printTable('== dwd_power_consumption_detail (latest 10) ==', await latestDetails(sink, 10));
  });
}

/** The demo shows final windows: the workflow closes past days after the capture segment that saw them. */
async function waitForClosedDays(cfg: AppConfig, days: number, timeoutMs: number): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await closedWindowCount(sink)) >= days) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    say('   (past days not closed yet; they show is_final = f until the next capture segment ends)');
  });
}

async function demo(o: { users: number; records: number; days: number }): Promise<void> {
  const cfg = config();
  say('1/5 stack up');
  await stackUp(cfg, say);
  say('2/5 db init');
  await initDatabases(cfg, cdcPassword());
  say('3/5 pipeline start');
  await withTemporal(async (client) => {
    const r = await startPipeline(cfg, client, { pipelineId: 'default' });
    say(r.alreadyRunning ? '  pipeline already running' : `  started ${r.workflowId}`);
  });
  say(`4/5 data insert (${o.users} users, ${o.records} records over ${o.days} days)`);
  await dataInsert(cfg, { users: o.users, records: o.records, days: o.days, seed: 42 });
  say('5/5 wait for ODS, DWD and DWS to catch up');
  if (!(await waitCaughtUp(cfg, 'default', 180000))) throw new Error('pipeline did not catch up within 180s');
  say('   waiting for the watermark to close the past days (is_final) ...');
  await waitForClosedDays(cfg, o.days - 1, 60000);
  await printTables(cfg);
  say(
    `Temporal Web UI: http://127.0.0.1:${cfg.temporalUiPort}/namespaces/${cfg.temporalNamespace}/workflows`,
  );
  say('Stop everything with: npx stategrid stack down');
}

/** `stategrid demo`: the original example end to end. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'the whole original example in one command: stack up, db init, pipeline start, data, wait, results',
    )
    .option('--users <n>', 'users', int('--users'), 20)
    .option('--records <n>', 'consumption records', int('--records'), 2000)
    .option('--days <n>', 'days', int('--days'), 7)
    .action(demo);
}
