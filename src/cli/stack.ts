import type { Command } from 'commander';
import { stackDown, stackStatus, stackUp, type StackStatus } from '../stack';
import { resolveTemporalCli, temporalVersion } from '../stack/temporal';
import { printJson, say } from './output';
import { config } from './shared';

function printStackStatus(s: StackStatus): void {
  say(
    `postgres: ${s.postgres.up ? 'up' : 'DOWN'} (${s.postgres.external ? 'external' : `pid ${s.postgres.pid ?? '-'}`}, port ${s.postgres.port})`,
  );
  say(
    `temporal: ${s.temporal.up ? 'up' : 'DOWN'} (${s.temporal.external ? 'external' : `pid ${s.temporal.pid}`}, ${s.temporal.address}, ui ${s.temporal.ui ? 'up' : 'down'})`,
  );
  say(`worker:   ${s.worker.up ? 'up' : 'DOWN'} (pid ${s.worker.pid ?? '-'}, pollers ${s.worker.pollers})`);
}

/** `stategrid stack up|provision|down|status`. */
export function registerStack(program: Command): void {
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
      if (o.json) printJson(s);
      else printStackStatus(s);
    });
}
