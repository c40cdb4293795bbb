import { Option, type Command } from 'commander';
import { stackDown, stackStatus, stackUp, type StackStatus } from '../stack';
import { resolveTemporalCli, temporalVersion } from '../stack/temporal';
import { resolveServerKit, TEMPORAL_SERVER_VERSION } from '../stack/temporal-server';
import { printJson, say } from './output';
import { config } from './shared';

function printStackStatus(s: StackStatus): void {
  say(
    `postgres: ${s.postgres.up ? 'up' : 'DOWN'} (${s.postgres.external ? 'external' : `pid ${s.postgres.pid ?? '-'}`}, port ${s.postgres.port})`,
  );
  say(
    `temporal: ${s.temporal.up ? 'up' : 'DOWN'} (${s.temporal.external ? 'external' : `${s.temporal.server === 'server' ? 'production' : 'dev'} server, pid ${s.temporal.pid}`}, ${s.temporal.address}, ui ${s.temporal.ui ? 'up' : 'down'})`,
  );
  say(`worker:   ${s.worker.up ? 'up' : 'DOWN'} (pid ${s.worker.pid ?? '-'}, pollers ${s.worker.pollers})`);
}

const temporalKindOption = () =>
  new Option(
    '--temporal <kind>',
    'dev: the Temporal dev server; server: the production server with PostgreSQL persistence and mTLS (remembered by the home)',
  ).choices(['dev', 'server']);

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
    .action(async (opts: { temporal?: 'dev' | 'server' }) => {
      chooseTemporal(opts.temporal);
      await stackUp(config(), say);
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
