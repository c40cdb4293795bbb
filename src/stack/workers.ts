import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AppConfig } from '../config';
import { logFile, ownedPid, runFile, type Log } from './home-files';
import { isAlive, readPid, spawnDetached, stopPid, waitFor } from './proc';

/**
 * The worker processes of `stack up --workers N`: `worker`, `worker-2` … `worker-N`, each with its own pid, ready
 * and log file and metrics port (STATEGRID_METRICS_PORT + i - 1). The count is remembered in run/workers.
 */
const MARKER = 'worker.js';

export function workerEntry(): string {
  return path.resolve(__dirname, '..', 'worker.js');
}

export const workerName = (i: number) => (i === 1 ? 'worker' : `worker-${i}`);
const countFile = (cfg: AppConfig) => path.join(cfg.home, 'run', 'workers');

/** The count asked for now, else the one remembered, else 1. */
export function workerCount(cfg: AppConfig, asked?: number): number {
  if (asked) {
    fs.writeFileSync(countFile(cfg), `${asked}\n`);
    return asked;
  }
  const remembered = readPid(countFile(cfg));
  return remembered ?? 1;
}

/** Names with a pid file, whether the process still runs or not. */
function knownWorkers(cfg: AppConfig): string[] {
  const dir = path.join(cfg.home, 'run');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /^worker(-\d+)?\.pid$/.test(f))
    .map((f) => f.replace(/\.pid$/, ''));
}

/**
 * Node flags of a worker process. Memory: a young generation of 16 MB semi-spaces (4 MB made V8 scavenge so often
 * that GC was a third of the worker's streaming CPU; 16 MB cut its CPU per row by about a quarter for ~30 MB more
 * resident) and an old-space cap that makes V8 collect before it grows; the live set is the batches in flight plus
 * the SDK, far below the cap. Under this cap V8 starts a mark-compact once the old space is about 1.3 times its
 * live set; a 2 GB cap (factor 4) saved about 0.8 us per streamed row for 70 MB more peak RSS (README, Sizing).
 * GC on the main thread: V8's parallel helper threads cost about 1 us more CPU per streamed row on a machine whose
 * cores the pipeline keeps busy (four quick bench runs, bench/README.md), and the worker's main thread is not what
 * limits the stream.
 * STATEGRID_WORKER_NODE_ARGS adds flags NODE_OPTIONS refuses, such as `--cpu-prof --cpu-prof-dir=DIR` to profile
 * the streaming path, or `--no-single-threaded-gc` (later flags win).
 */
function nodeFlags(env: NodeJS.ProcessEnv): string[] {
  const extra = (env.STATEGRID_WORKER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  return [...WORKER_NODE_FLAGS, ...extra];
}

/** The flags every worker process runs with (docker-compose.yml and the Dockerfile give the same). */
export const WORKER_NODE_FLAGS = [
  '--max-semi-space-size=16',
  '--max-old-space-size=256',
  '--single-threaded-gc',
];

/** Signals a foreground worker passes on; a hangup (its terminal closed) stops the worker as SIGTERM does. */
const FORWARDED: Partial<Record<NodeJS.Signals, NodeJS.Signals>> = {
  SIGINT: 'SIGINT',
  SIGTERM: 'SIGTERM',
  SIGQUIT: 'SIGQUIT',
  SIGHUP: 'SIGTERM',
};

/**
 * `stategrid worker`: the worker entry in a child process with the workers' node flags (heap sizes and GC cannot be
 * set once node runs), its output on this terminal. The child has a process group of its own, so a Ctrl-C reaches
 * it once, through this process, not twice (the SDK stops gracefully on the first signal and leaves the second to
 * node, which exits at once); it stops by itself if this process is killed outright. Resolves to the exit code to
 * leave with.
 */
export function runWorkerInForeground(env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, [...nodeFlags(env), workerEntry()], {
    stdio: 'inherit',
    env: { ...env, STATEGRID_WORKER_PARENT: String(process.pid) },
    detached: true,
  });
  const handlers = Object.entries(FORWARDED).map(([received, sent]) => {
    const handler = () => child.kill(sent);
    process.on(received, handler);
    return () => process.off(received, handler);
  });
  return new Promise((resolve, reject) => {
    const done = (outcome: () => void) => {
      handlers.forEach((off) => off());
      outcome();
    };
    child.once('error', (err) => done(() => reject(err)));
    child.once('exit', (code, signal) =>
      done(() => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 0))),
    );
  });
}

async function startWorker(
  cfg: AppConfig,
  i: number,
  env: NodeJS.ProcessEnv,
): Promise<'running' | 'started'> {
  const name = workerName(i);
  if (ownedPid(cfg, name, MARKER)) return 'running';
  if (!fs.existsSync(workerEntry()))
    throw new Error(`worker not built (${workerEntry()} missing): run npm run build`);
  const metricsPort = cfg.metricsPort ? String(cfg.metricsPort + i - 1) : '0';
  const pid = spawnDetached(process.execPath, [...nodeFlags(env), workerEntry()], {
    logFile: logFile(cfg, name),
    env: {
      ...env,
      STATEGRID_HOME: cfg.home,
      STATEGRID_WORKER_NAME: name,
      STATEGRID_METRICS_PORT: metricsPort,
    },
  });
  fs.writeFileSync(runFile(cfg, name), `${pid}\n`);
  // The worker writes its pid to <name>.ready once its poll loops start (stale pollers don't count).
  const ready = path.join(cfg.home, 'run', `${name}.ready`);
  await waitFor(
    `${name} to poll ${cfg.taskQueue} (see ${logFile(cfg, name)})`,
    async () => {
      if (!isAlive(pid)) throw new Error(`${name} exited at start; see ${logFile(cfg, name)}`);
      return readPid(ready) === pid;
    },
    120000,
  );
  return 'started';
}

/** Starts workers 1..count that do not run and stops those above count; returns what each one did. */
export async function startWorkers(
  cfg: AppConfig,
  count: number,
  env: NodeJS.ProcessEnv,
  log: Log,
): Promise<string[]> {
  for (const name of knownWorkers(cfg)) {
    const i = name === 'worker' ? 1 : Number(name.split('-')[1]);
    if (i > count) await stopWorker(cfg, name, log);
  }
  const started = await Promise.all(Array.from({ length: count }, (_, k) => startWorker(cfg, k + 1, env)));
  started.forEach((state, k) =>
    log(`${workerName(k + 1)}: ${state} (log ${logFile(cfg, workerName(k + 1))})`),
  );
  return started;
}

async function stopWorker(cfg: AppConfig, name: string, log: Log): Promise<void> {
  const pid = ownedPid(cfg, name, MARKER);
  if (pid) {
    await stopPid(pid, 20000);
    log(`${name} stopped (pid ${pid})`);
  }
  fs.rmSync(runFile(cfg, name), { force: true });
}

export async function stopWorkers(cfg: AppConfig, log: Log): Promise<void> {
  await Promise.all(knownWorkers(cfg).map((name) => stopWorker(cfg, name, log)));
}

export type WorkerProcess = { name: string; pid?: number; up: boolean };

export function workerProcesses(cfg: AppConfig): WorkerProcess[] {
  return knownWorkers(cfg)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
    .map((name) => {
      const pid = ownedPid(cfg, name, MARKER);
      return { name, pid, up: !!pid };
    });
}

/** Log files of the local workers (`worker.log`, `worker-2.log` …) that exist. */
function workerLogs(cfg: AppConfig): string[] {
  const dir = path.join(cfg.home, 'logs');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /^worker(-\d+)?\.log$/.test(f))
    .map((f) => path.join(dir, f));
}

/** Bytes of each local worker log now, so that a later count reads only what was added. */
export function workerLogSizes(cfg: AppConfig): Map<string, number> {
  return new Map(workerLogs(cfg).map((f) => [f, fs.statSync(f).size]));
}

/**
 * Log lines with the error "replication slot … is active" (SQLSTATE 55006) in the local workers' logs after
 * `since` (bytes per log, from workerLogSizes; whole logs without it): each is two streams racing for the slot,
 * which capture affinity must prevent.
 */
export function slotConflictsInWorkerLogs(cfg: AppConfig, since = new Map<string, number>()): number {
  let n = 0;
  for (const f of workerLogs(cfg)) {
    const added = fs
      .readFileSync(f)
      .subarray(since.get(f) ?? 0)
      .toString('utf8');
    n += added.split('\n').filter((line) => /55006|replication slot "[^"]+" is active/.test(line)).length;
  }
  return n;
}
