import { Command, InvalidArgumentError, Option } from 'commander';
import { ScheduleOverlapPolicy, ScheduleNotFoundError } from '@temporalio/client';
import { SingleBar, Presets } from 'cli-progress';
import { keepValuesAsText } from '../db/client';
import { ConfigError, loadConfig, maskUrl, type AppConfig } from '../config';
import type { Client } from '@temporalio/client';
import {
  followSnapshot,
  pipelineStatus,
  pipelineWorkflowId,
  startPipeline,
  temporalClient,
  waitCaughtUp,
  type PipelineStatus,
} from '../control/pipeline';
import { insertTestData } from '../data/generate';
import { initDatabases } from '../db/init';
import { stackDown, stackStatus, stackUp } from '../stack';
import { resolveTemporalCli, temporalVersion } from '../stack/temporal';
import { previousLocalDay } from '../workflows/window-time';
import type { RecomputeResult } from '../workflows/types';
import { withClient } from '../db/client';
import { dropSlot } from '../cdc/source-admin';

/** The `stategrid` command (DESIGN.md §3). */
const say = (m: string) => console.log(m);

function config(): AppConfig {
  return loadConfig();
}

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};
const isoDate = (v: string) => {
  const t = Date.parse(v + 'T00:00:00Z');
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== v) {
    throw new InvalidArgumentError('must be a date YYYY-MM-DD');
  }
  return v;
};

async function withTemporal<T>(fn: (c: Awaited<ReturnType<typeof temporalClient>>['client']) => Promise<T>) {
  const cfg = config();
  const t = await temporalClient(cfg);
  try {
    return await fn(t.client);
  } finally {
    await t.close();
  }
}

function printStatus(s: PipelineStatus): void {
  const st = s.state;
  const cp = s.sink.checkpoint;
  say(`pipeline ${s.workflowId}: workflow ${s.workflowStatus}, phase ${st?.phase ?? cp?.phase ?? 'unknown'}`);
  if (st?.error) say(`  ERROR: ${st.error}`);
  if (cp) {
    say(`  checkpoint: commit ${cp.commit_lsn}#${cp.seq}, confirmed ${cp.confirmed_lsn}, dws ${cp.dws_lsn}`);
    say(
      `  snapshot rows: ${cp.snapshot_rows}, changes applied: ${cp.changes_applied}, max event: ${cp.max_event_time}`,
    );
  }
  say(
    `  slot: ${s.slot.exists ? `${s.slot.active ? 'active' : 'inactive'}, lag ${s.slot.lagBytes} bytes, wal ${s.slot.walStatus}` : 'MISSING'}`,
  );
  if (st?.lastSegment) {
    say(
      `  last segment: ${st.lastSegment.applied} changes in ${st.lastSegment.seconds}s (${st.lastSegment.rowsPerSecond}/s)`,
    );
  }
  say(
    `  dead letters: ${s.sink.deadLetters}, orphans: ${s.sink.orphans}, late events: ${s.sink.lateEvents}, revisions: ${s.sink.revisions}, closed days: ${s.sink.closedDays}`,
  );
  if (st) say(`  open days: ${st.openDays.join(', ') || '-'}`);
  for (const [t, n] of Object.entries(s.sink.rows)) say(`  ${t.padEnd(30)} ${n}`);
}

async function printTables(cfg: AppConfig): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const stats = await sink.query(
      `SELECT stat_date::text, region_id, region_name, total_consumption, total_cost, user_count, max_consumption, is_final
       FROM dws_region_daily_stats ORDER BY stat_date, region_id`,
    );
    say('\n== dws_region_daily_stats ==');
    console.table(stats.rows);
    const ranking = await sink.query(
      `SELECT stat_date::text, region_name, ranking, user_id, user_name, total_consumption, total_cost, is_final
       FROM dws_user_ranking WHERE ranking <= 3 AND stat_date = (SELECT max(stat_date) FROM dws_user_ranking)
       ORDER BY region_id, ranking`,
    );
    say('== dws_user_ranking (top 3 per region, latest day) ==');
    console.table(ranking.rows);
    const detail = await sink.query(
      `SELECT consumption_id, user_id, user_name, consumption_amount, consumption_cost, consumption_date::text,
         region_name, usage_type FROM dwd_power_consumption_detail ORDER BY consumption_id DESC LIMIT 10`,
    );
    say('== dwd_power_consumption_detail (latest 10) ==');
    console.table(detail.rows);
  });
}

/** The demo shows final windows: the workflow closes past days after the capture segment that saw them. */
async function waitForClosedDays(cfg: AppConfig, days: number, timeoutMs: number): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const { rows } = await sink.query(`SELECT count(*)::int AS n FROM stategrid_window WHERE is_final`);
      if (rows[0].n >= days) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    say('   (past days not closed yet; they show is_final = false until the next capture segment ends)');
  });
}

function todayIn(timeZone: string): string {
  return previousLocalDay(Date.now() + 86_400_000, timeZone);
}

async function dataInsert(
  cfg: AppConfig,
  o: { users: number; records: number; days: number; seed: number; baseDate?: string },
) {
  await withClient(cfg.sourceUrl, async (source) => {
    const r = await insertTestData(source, { ...o, baseDate: o.baseDate ?? todayIn(cfg.timeZone) });
    say(`inserted ${r.users} new users and ${r.records} consumption records`);
  });
}

/** Snapshot progress: a bar in an interactive terminal, a line every few seconds otherwise. */
async function showSnapshotProgress(cfg: AppConfig, client: Client, pipelineId: string): Promise<void> {
  const interactive = !!process.stdout.isTTY;
  const bar = interactive
    ? new SingleBar({ format: 'snapshot {bar} {value}/{total} rows | {phase}' }, Presets.shades_classic)
    : null;
  let lastLine = 0;
  const phase = await followSnapshot(cfg, client, pipelineId, (p) => {
    if (bar) {
      if (!bar.isActive) bar.start(p.total, 0, { phase: p.phase });
      bar.setTotal(p.total);
      bar.update(p.rows, { phase: p.phase });
    } else if (Date.now() - lastLine >= 5000 || p.phase !== 'snapshot') {
      lastLine = Date.now();
      say(`snapshot ${p.rows}/${p.total} rows (${p.phase})`);
    }
  });
  bar?.stop();
  if (phase !== 'streaming' && phase !== 'paused') {
    throw new Error(
      `pipeline ${pipelineId} is ${phase} after its snapshot; see \`stategrid pipeline status\``,
    );
  }
  say(`pipeline ${pipelineId} is ${phase}`);
}

async function recomputeRange(
  cfg: AppConfig,
  from: string,
  to: string,
  pipelineId: string,
): Promise<RecomputeResult[]> {
  const days: string[] = [];
  for (let t = Date.parse(from + 'T00:00:00Z'); t <= Date.parse(to + 'T00:00:00Z'); t += 86_400_000) {
    days.push(new Date(t).toISOString().slice(0, 10));
  }
  if (!days.length) throw new InvalidArgumentError('--from must not be after --to');
  const interactive = !!process.stdout.isTTY;
  const bar = interactive
    ? new SingleBar(
        { format: 'recompute {bar} {value}/{total} days | {date} drift {drift}' },
        Presets.shades_classic,
      )
    : null;
  bar?.start(days.length, 0, { date: '', drift: 0 });
  const results: RecomputeResult[] = [];
  await withTemporal(async (client) => {
    for (const [i, date] of days.entries()) {
      const r = await client.workflow.execute('dailyRecomputeWorkflow', {
        taskQueue: cfg.taskQueue,
        workflowId: `stategrid-recompute-${pipelineId}-${date}-${Date.now()}`,
        args: [{ date, pipelineId }],
      });
      results.push(r as RecomputeResult);
      if (bar) bar.update(i + 1, { date, drift: (r as RecomputeResult).drift });
      else say(`recompute ${i + 1}/${days.length} ${date}: drift ${(r as RecomputeResult).drift} rows`);
    }
  });
  bar?.stop();
  return results;
}

export const SCHEDULE_ID = 'stategrid-daily-recompute';

export function buildProgram(): Command {
  const program = new Command('stategrid').description(
    'Real-time layered warehouse for State Grid power data',
  );

  const stack = program
    .command('stack')
    .description('the embedded stack: PostgreSQL, Temporal dev server, worker');
  stack
    .command('up')
    .description('start what is not running (idempotent)')
    .action(async () => {
      await stackUp(config(), say);
    });
  stack
    .command('provision')
    .description('find or build the Temporal CLI (dev server) without starting anything')
    .action(async () => {
      const bin = await resolveTemporalCli(config(), say);
      say(`temporal: ${bin} (${temporalVersion(bin)})`);
    });
  stack
    .command('down')
    .description('stop what stack up started')
    .action(async () => {
      await stackDown(config(), say);
    });
  stack
    .command('status')
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const s = await stackStatus(config());
      if (o.json) return say(JSON.stringify(s, null, 2));
      say(
        `postgres: ${s.postgres.up ? 'up' : 'DOWN'} (pid ${s.postgres.pid ?? '-'}, port ${s.postgres.port})`,
      );
      say(
        `temporal: ${s.temporal.up ? 'up' : 'DOWN'} (pid ${s.temporal.pid ?? 'external'}, ${s.temporal.address}, ui ${s.temporal.ui ? 'up' : 'down'})`,
      );
      say(
        `worker:   ${s.worker.up ? 'up' : 'DOWN'} (pid ${s.worker.pid ?? '-'}, pollers ${s.worker.pollers})`,
      );
    });

  program
    .command('db')
    .description('database setup')
    .command('init')
    .description('create source tables, publication, CDC role and all sink tables (idempotent)')
    .action(async () => {
      const cfg = config();
      await initDatabases(cfg, process.env.STATEGRID_CDC_PASSWORD ?? 'stategrid_cdc');
      say(`initialised source ${maskUrl(cfg.sourceUrl)} and sink ${maskUrl(cfg.sinkUrl)}`);
    });

  const pipeline = program.command('pipeline').description('the CDC pipeline workflow');
  pipeline
    .command('start')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .addOption(new Option('--plugin <plugin>', 'decoding plugin').choices(['pgoutput', 'wal2json']))
    .option('--resync', 'drop the slot and take a fresh snapshot')
    .option('--input <json>', 'extra workflow input as JSON (batchRows, segmentSeconds, ...)')
    .option('--detach', 'return once the workflow is started instead of following the snapshot')
    .action(async (o) => {
      const cfg = config();
      let extra: Record<string, unknown> = {};
      if (o.input) {
        try {
          extra = JSON.parse(o.input);
        } catch {
          throw new InvalidArgumentError('--input must be JSON');
        }
      }
      const input = {
        ...extra,
        pipelineId: o.id,
        ...(o.plugin ? { plugin: o.plugin } : {}),
        ...(o.resync ? { resync: true } : {}),
      };
      await withTemporal(async (client) => {
        const r = await startPipeline(cfg, client, input);
        say(r.alreadyRunning ? `pipeline ${r.workflowId} is already running` : `started ${r.workflowId}`);
        if (!o.detach) await showSnapshotProgress(cfg, client, o.id);
      });
    });
  pipeline
    .command('status')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const cfg = config();
      await withTemporal(async (client) => {
        const s = await pipelineStatus(cfg, client, o.id);
        if (o.json) say(JSON.stringify(s, null, 2));
        else printStatus(s);
      });
    });
  for (const name of ['pause', 'resume'] as const) {
    pipeline
      .command(name)
      .option('--id <pipelineId>', 'pipeline id', 'default')
      .action(async (o) => {
        await withTemporal(async (client) => {
          await client.workflow.getHandle(pipelineWorkflowId(o.id)).signal(name);
          say(`${name} sent to ${pipelineWorkflowId(o.id)}`);
        });
      });
  }
  pipeline
    .command('stop')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option('--drop-slot', 'also drop the replication slot and publication')
    .action(async (o) => {
      const cfg = config();
      await withTemporal(async (client) => {
        const handle = client.workflow.getHandle(pipelineWorkflowId(o.id));
        const running = await handle.describe().then(
          (d) => d.status.name === 'RUNNING',
          () => false,
        );
        if (!running) {
          // An abandoned pipeline: no workflow to signal, but its slot may still hold WAL.
          const slot = `stategrid_${o.id}`;
          const dropped = o.dropSlot ? await dropSlot(cfg.sourceUrl, slot) : false;
          say(
            `pipeline ${pipelineWorkflowId(o.id)} is not running` +
              (o.dropSlot ? (dropped ? `; dropped slot ${slot}` : `; no slot ${slot}`) : ''),
          );
          return;
        }
        await handle.signal('stop', { dropSlot: !!o.dropSlot });
        await handle.result();
        say(
          `stopped ${pipelineWorkflowId(o.id)}${o.dropSlot ? ' and dropped its slot and publication' : ''}`,
        );
      });
    });

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

  program
    .command('wait')
    .description('exit 0 once everything committed in the source is reflected in ODS, DWD and DWS')
    .option('--timeout <seconds>', 'give up after this long', int('--timeout'), 120)
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(async (o) => {
      const ok = await waitCaughtUp(config(), o.id, o.timeout * 1000);
      if (!ok) {
        console.error(`not caught up after ${o.timeout}s (see: stategrid pipeline status)`);
        process.exitCode = 1;
      } else say('caught up: ODS, DWD and DWS reflect every change committed before this call');
    });

  program
    .command('recompute')
    .description('recompute DWS for a range of days from DWD, reporting drift')
    .requiredOption('--from <date>', 'first day', isoDate)
    .requiredOption('--to <date>', 'last day', isoDate)
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(async (o) => {
      const results = await recomputeRange(config(), o.from, o.to, o.id);
      const drift = results.reduce((a, r) => a + r.drift, 0);
      say(`recomputed ${results.length} days, total drift ${drift} rows`);
    });

  const schedule = program.command('schedule').description('the daily recomputation schedule');
  schedule
    .command('create')
    .option('--cron <expr>', 'cron expression', '0 1 * * *')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(async (o) => {
      const cfg = config();
      await withTemporal(async (client) => {
        await client.schedule.create({
          scheduleId: SCHEDULE_ID,
          spec: { cronExpressions: [o.cron], timezone: cfg.timeZone },
          action: {
            type: 'startWorkflow',
            workflowType: 'dailyRecomputeWorkflow',
            taskQueue: cfg.taskQueue,
            workflowId: `stategrid-daily-recompute-${o.id}`,
            args: [{ pipelineId: o.id, timeZone: cfg.timeZone }],
          },
          policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
        });
        say(`schedule ${SCHEDULE_ID} created: '${o.cron}' in ${cfg.timeZone}, recomputes the previous day`);
      });
    });
  schedule.command('describe').action(async () => {
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
  });
  schedule.command('delete').action(async () => {
    await withTemporal(async (client) => {
      await client.schedule.getHandle(SCHEDULE_ID).delete();
      say(`schedule ${SCHEDULE_ID} deleted`);
    });
  });

  program
    .command('demo')
    .description(
      'the whole original example in one command: stack up, db init, pipeline start, data, wait, results',
    )
    .option('--users <n>', 'users', int('--users'), 20)
    .option('--records <n>', 'consumption records', int('--records'), 2000)
    .option('--days <n>', 'days', int('--days'), 7)
    .action(async (o) => {
      const cfg = config();
      say('1/5 stack up');
      await stackUp(cfg, say);
      say('2/5 db init');
      await initDatabases(cfg, process.env.STATEGRID_CDC_PASSWORD ?? 'stategrid_cdc');
      say('3/5 pipeline start');
      await withTemporal(async (client) => {
        const r = await startPipeline(cfg, client, { pipelineId: 'default' });
        say(r.alreadyRunning ? '  pipeline already running' : `  started ${r.workflowId}`);
      });
      say(`4/5 data insert (${o.users} users, ${o.records} records over ${o.days} days)`);
      await dataInsert(cfg, { users: o.users, records: o.records, days: o.days, seed: 42 });
      say('5/5 wait for ODS, DWD and DWS to catch up');
      if (!(await waitCaughtUp(cfg, 'default', 180000)))
        throw new Error('pipeline did not catch up within 180s');
      say('   waiting for the watermark to close the past days (is_final) ...');
      await waitForClosedDays(cfg, o.days - 1, 60000);
      await printTables(cfg);
      say(
        `Temporal Web UI: http://127.0.0.1:${cfg.temporalUiPort}/namespaces/${cfg.temporalNamespace}/workflows`,
      );
      say('Stop everything with: npx stategrid stack down');
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  keepValuesAsText();
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) console.error(err.message);
    else console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
