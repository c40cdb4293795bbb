import type { Command } from 'commander';
import { runWorkerInForeground } from '../stack/workers';
import { config } from './shared';

/**
 * `stategrid worker`: one more worker in the foreground, on this host or another (a container, a VM), run with the
 * node flags of the workers `stack up` starts.
 */
export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description(
      'run a worker in the foreground (logs to stdout) on the settings of this environment; stops on Ctrl-C / SIGTERM',
    )
    .action(async () => {
      config(); // bad settings fail here, naming the setting, before a process starts
      process.exitCode = await runWorkerInForeground(process.env);
    });
}
