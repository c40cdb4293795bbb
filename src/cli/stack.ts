import { InvalidArgumentError, Option, type Command } from 'commander';
import { stackDown, stackStatus, stackUp, type StackStatus } from '../stack';
import { resolveTemporalCli, temporalVersion } from '../stack/temporal';
import { resolveServerKit, TEMPORAL_SERVER_VERSION } from '../stack/temporal-server';
import { printJson, say } from './output';
import { config, int } from './shared';

function printStackStatus(s: StackStatus): void {
  say(
    `postgres: ${s.postgres.up ? 'up' : 'DOWN'} (${s.postgres.external ? 'external' : `pid ${s.postgres.pid ?? '-'}`}, port ${s.postgres.port})`,
  );
  say(
    `temporal: ${s.temporal.up ? 'up' : 'DOWN'} (${s.temporal.external ? 'external' : `${s.temporal.server === 'server' ? 'production' : 'dev'} server, pid ${s.temporal.pid}`}, ${s.temporal.address}, ui ${s.temporal.ui ? 'up' : 'down'})`,
  );
  for (const w of s.workers.processes)
    say(`${`${w.name}:`.padEnd(9)} ${w.up ? 'up' : 'DOWN'} (pid ${w.pid ?? '-'})`);
  if (!s.workers.processes.length) say('worker:   none started here');
  say(`pollers:  ${s.workers.pollers.length} (${s.workers.pollers.join(', ') || 'none'})`);
}

const temporalKindOption = () =>
  new Option(
    '--temporal <kind>',
    'dev: the Temporal dev server; server: the production server with PostgreSQL persistence and mTLS (remembered by the home)',
  ).choices(['dev', 'server']);

const positive = (name: string) => (v: string) => {
  const n = int(name)(v);
  if (n < 1 || n > 16) throw new InvalidArgumentError(`${name} must be between 1 and 16`);
  return n;
};

/** The flag wins over STATEGRID_TEMPORAL_SERVER; config() reads it from there like every setting. */
function chooseTemporal(kind: 'dev' | 'server' | undefined): void {
  if (kind) process.env.STATEGRID_TEMPORAL_SERVER = kind;
}

/** `stategrid stack up|provision|down|status`. */
export function registerStack(program: Command): void {
  const stack = program
    .command('stack')
    .description('the embedded stack: PostgreSQL, Temporal dev server, worker');
  stack
    .command('up')
    .description('start what is not running (idempotent)')
    .addOption(temporalKindOption())
    .option('--workers <n>', 'worker processes to run here (remembered; default 1)', positive('--workers'))
    .action(async (opts: { temporal?: 'dev' | 'server'; workers?: number }) => {
      chooseTemporal(opts.temporal);
      await stackUp(config(), say, { workers: opts.workers });
    });
  stack
    .command('provision')
    .description('find or build the Temporal binaries without starting anything')
    .addOption(temporalKindOption())
    .action(async (opts: { temporal?: 'dev' | 'server' }) => {
      chooseTemporal(opts.temporal);
      const bin = await resolveTemporalCli(config(), say);
      say(`temporal: ${bin} (${temporalVersion(bin)})`);
      if (config().temporalServer === 'server') {
        const kit = await resolveServerKit(say);
        say(`temporal server: ${kit.server} (${TEMPORAL_SERVER_VERSION}), sql tool ${kit.sqlTool}`);
      }
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
      if (o.json) printJson(s);
      else printStackStatus(s);
    });
}
