import type { Command } from 'commander';
import { waitCaughtUp } from '../control/pipeline';
import { say } from './output';
import { config, int } from './shared';

/** `stategrid wait`: exit 0 once caught up, 1 on timeout. */
export function registerWait(program: Command): void {
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
}
