import type { Command } from 'commander';
import { config } from './shared';

/** `stategrid worker`: one more worker in the foreground, on this host or another (a container, a VM). */
export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description(
      'run a worker in the foreground (logs to stdout) on the settings of this environment; stops on Ctrl-C / SIGTERM',
    )
    .action(async () => {
      const cfg = config();
      // Loaded on demand: the SDK's worker (and its native runtime) is not needed by the other commands.
      const { runWorker } = await import('../worker');
      await runWorker(cfg);
    });
}
