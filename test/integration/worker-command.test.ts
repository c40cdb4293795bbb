import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { WORKER_NODE_FLAGS } from '../../src/stack/workers';
import { isAlive, waitFor } from '../../src/stack/proc';
import { commandWorker } from './helpers/pipeline';
import { REPO_ROOT } from './setup/env';

/**
 * `stategrid worker` as an operator runs it, in a terminal, a container or a service unit, against the test's
 * PostgreSQL and Temporal: its worker process runs with the node flags of every worker, one signal stops it
 * gracefully, and a command killed outright leaves no worker behind. A Ctrl-C goes to the terminal's whole process
 * group; the test sends it that way.
 */
describe('stategrid worker in the foreground', function () {
  this.timeout(120000);
  const base = loadConfig().home;

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGKILL'] as const) {
    it(`runs the worker with the workers' node flags and stops it on ${signal} to the command`, async () => {
      const home = path.join(base, `worker-command-${signal}`);
      fs.rmSync(home, { recursive: true, force: true });
      const command = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'stategrid.js'), 'worker'], {
        env: {
          ...process.env,
          STATEGRID_HOME: home,
          STATEGRID_TASK_QUEUE: 'stategrid-worker-command',
          STATEGRID_METRICS_PORT: '0',
        },
        detached: true, // a process group of its own, as a shell gives a foreground job
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      command.stdout.on('data', (d: Buffer) => (output += d.toString()));
      command.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => command.on('exit', (code) => resolve(code)));
      const pid = command.pid ?? 0;

      const workerPid = await commandWorker(pid, home, () => `its output:\n${output}`, 60000);
      const argv = fs.readFileSync(`/proc/${workerPid}/cmdline`, 'utf8').split('\0');
      for (const flag of WORKER_NODE_FLAGS) assert.ok(argv.includes(flag), `${flag} in ${argv.join(' ')}`);
      assert.ok(
        argv.some((a) => a.endsWith(path.join('src', 'worker.js'))),
        `runs the worker entry: ${argv.join(' ')}`,
      );

      process.kill(signal === 'SIGINT' ? -pid : pid, signal);
      if (signal === 'SIGKILL') {
        // The command cannot pass it on: the worker, in its own process group, notices and stops by itself.
        await exited;
        await waitFor(
          'the worker to stop after its command was killed',
          async () => !isAlive(workerPid),
          30000,
        );
        return;
      }
      // Exit 0: the worker shut down on its own, not ended by a signal (128 + n).
      assert.equal(await exited, 0, `stategrid worker exit code; its output:\n${output}`);
      assert.ok(!isAlive(workerPid), 'the worker process is gone with the command');
    });
  }
});
