import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { loadConfig, maskUrl, type AppConfig } from '../config';
import { logFile, ownedPid, runFile, type Log } from './home-files';
import { isAlive, portOpen, spawnDetached, stopPid, waitFor } from './proc';
import { postgresPid, startPostgres, stopPostgres, usesEmbeddedPort } from './postgres';
import { resolveTemporalCli, temporalServerArgs } from './temporal';
import { taskQueuePollers } from '../temporal/pollers';
import { STACK_PROFILE } from '../temporal/settings';
import { ensureNamespace, prepareTemporalServer, serverHome } from './temporal-server';
import { startWorkers, stopWorkers, workerCount, workerProcesses, type WorkerProcess } from './workers';

export { workerEntry } from './workers';

/** `stategrid stack up|down|status`: PostgreSQL, Temporal (dev or production server) and background workers. */
const temporalPort = (cfg: AppConfig) => Number(cfg.temporalAddress.split(':')[1]);
const temporalHost = (cfg: AppConfig) => cfg.temporalAddress.split(':')[0];

/** Identities of the workers polling the pipeline's workflow task queue. */
export async function workerPollers(cfg: AppConfig): Promise<string[]> {
  const connection = await Connection.connect({
    ...clientConfig(cfg).temporal.connection,
    connectTimeout: 2000,
  });
  try {
    const pollers = await taskQueuePollers(
      connection.workflowService,
      cfg.temporalNamespace,
      cfg.taskQueue,
      'workflow',
    );
    return pollers.map((p) => p.identity);
  } finally {
    await connection.close();
  }
}

/**
 * Temporal is ours to start only on this machine, and then either the plain-text dev server or the production
 * server whose mTLS profile the stack wrote; TLS or an API key chosen by the user means their own cluster.
 */
export const temporalIsLocal = (cfg: AppConfig) =>
  ['127.0.0.1', 'localhost'].includes(temporalHost(cfg)) && (!cfg.temporal.secured || cfg.temporalFromStack);

/** What our temporal pid file's process has in its command line, per kind. */
const TEMPORAL_MARKER = { dev: 'start-dev', server: 'temporal-server' } as const;
const ownedTemporal = (cfg: AppConfig) =>
  ownedPid(cfg, 'temporal', TEMPORAL_MARKER.dev) ?? ownedPid(cfg, 'temporal', TEMPORAL_MARKER.server);

async function startTemporal(cfg: AppConfig, log: Log): Promise<'running' | 'started' | 'external'> {
  if (!temporalIsLocal(cfg)) {
    // A cluster or Temporal Cloud the settings point at: never started or stopped here.
    log(`Temporal at ${cfg.temporal.summary} is external; not starting a dev server`);
    return 'external';
  }
  const port = temporalPort(cfg);
  const other = cfg.temporalServer === 'server' ? 'dev' : 'server';
  if (ownedPid(cfg, 'temporal', TEMPORAL_MARKER[other]))
    throw new Error(
      `this stack runs the Temporal ${other === 'dev' ? 'dev server' : 'production server'}; run stategrid stack down before switching`,
    );
  if (
    ownedPid(cfg, 'temporal', TEMPORAL_MARKER[cfg.temporalServer]) &&
    (await portOpen(port, temporalHost(cfg)))
  )
    return 'running';
  if (await portOpen(port, temporalHost(cfg))) {
    // Someone else's server (e.g. `temporal server start-dev` by hand or CI's): use it, never stop it.
    log(`Temporal already answers on ${cfg.temporalAddress}; using it`);
    return 'running';
  }
  if (cfg.temporalServer === 'server') return startProductionServer(cfg, log);
  // The home runs the dev server again: its clients must no longer pick up the production server's profile.
  fs.rmSync(serverHome(cfg).clientProfile, { force: true });
  const bin = await resolveTemporalCli(cfg, log);
  fs.mkdirSync(path.join(cfg.home, 'temporal'), { recursive: true });
  const pid = spawnDetached(bin, temporalServerArgs(cfg), { logFile: logFile(cfg, 'temporal') });
  fs.writeFileSync(runFile(cfg, 'temporal'), `${pid}\n`);
  await waitFor(`Temporal on ${cfg.temporalAddress}`, () => portOpen(port, temporalHost(cfg)), 60000);
  await waitFor(`Temporal Web UI on ${cfg.temporalUiPort}`, () => portOpen(cfg.temporalUiPort), 60000);
  return 'started';
}

async function startProductionServer(cfg: AppConfig, log: Log): Promise<'started'> {
  const server = await prepareTemporalServer(cfg, log);
  const pid = spawnDetached(server.bin, server.args, { logFile: logFile(cfg, 'temporal') });
  fs.writeFileSync(runFile(cfg, 'temporal'), `${pid}\n`);
  await waitFor(
    `the Temporal server on ${cfg.temporalAddress} (see ${logFile(cfg, 'temporal')})`,
    async () => {
      if (!isAlive(pid))
        throw new Error(`the Temporal server exited at start; see ${logFile(cfg, 'temporal')}`);
      return portOpen(temporalPort(cfg), temporalHost(cfg));
    },
    120000,
  );
  const connection = await Connection.connect({
    ...clientConfig(cfg).temporal.connection,
    connectTimeout: 10000,
  });
  try {
    await ensureNamespace(connection, cfg.temporalNamespace);
  } finally {
    await connection.close();
  }
  log(`temporal: production server ${server.version} with PostgreSQL persistence and mTLS; clients use:`);
  log(
    `  export TEMPORAL_CONFIG_FILE=${server.clientEnv.TEMPORAL_CONFIG_FILE} TEMPORAL_PROFILE=${server.clientEnv.TEMPORAL_PROFILE}`,
  );
  return 'started';
}

/** With the local production server, its clients (our worker too) use its mTLS profile whatever else is set. */
function clientEnv(cfg: AppConfig): Record<string, string> {
  if (cfg.temporalServer !== 'server' || !temporalIsLocal(cfg)) return {};
  return {
    STATEGRID_TEMPORAL_SERVER: 'server',
    TEMPORAL_CONFIG_FILE: serverHome(cfg).clientProfile,
    TEMPORAL_PROFILE: STACK_PROFILE,
  };
}

function clientConfig(cfg: AppConfig): AppConfig {
  const extra = clientEnv(cfg);
  if (!Object.keys(extra).length || cfg.temporalFromStack) return cfg;
  return loadConfig({ ...process.env, STATEGRID_HOME: cfg.home, ...extra });
}

export async function stackUp(
  cfg: AppConfig,
  log: Log,
  opts: { restartWorker?: boolean; workers?: number } = {},
): Promise<Record<string, string>> {
  fs.mkdirSync(path.join(cfg.home, 'run'), { recursive: true });
  fs.mkdirSync(path.join(cfg.home, 'logs'), { recursive: true });
  const result: Record<string, string> = {};
  result.postgres = await startPostgres(cfg, log);
  log(
    result.postgres === 'external'
      ? `postgres: external (${maskUrl(cfg.sourceUrl)}); not started or stopped here`
      : `postgres: ${result.postgres} on 127.0.0.1:${cfg.pgPort}`,
  );
  result.temporal = await startTemporal(cfg, log);
  const ui =
    cfg.temporalServer === 'dev' ? `Web UI http://127.0.0.1:${cfg.temporalUiPort}` : 'mTLS, no Web UI';
  log(`temporal: ${result.temporal} on ${cfg.temporalAddress} (${ui})`);
  if (opts.restartWorker) await stopWorkers(cfg, log);
  const count = workerCount(cfg, opts.workers);
  const workers = await startWorkers(cfg, count, { ...process.env, ...clientEnv(cfg) }, log);
  result.worker = workers[0];
  log(`workers: ${count} on task queue ${cfg.taskQueue}`);
  return result;
}

export async function stackDown(cfg: AppConfig, log: Log): Promise<void> {
  await stopWorkers(cfg, log);
  const temporal = ownedTemporal(cfg);
  if (temporal) {
    await stopPid(temporal, 20000);
    log(`temporal stopped (pid ${temporal})`);
  }
  fs.rmSync(runFile(cfg, 'temporal'), { force: true });
  if (await stopPostgres(cfg)) log('postgres stopped');
}

export type StackStatus = {
  postgres: { pid?: number; port: number; up: boolean; external: boolean };
  temporal: {
    pid?: number;
    address: string;
    up: boolean;
    ui: boolean;
    external: boolean;
    server: AppConfig['temporalServer'];
  };
  worker: { pid?: number; up: boolean; pollers: number };
  /** Every worker process of this home, and the identities polling the task queue (any host). */
  workers: { processes: WorkerProcess[]; pollers: string[] };
};

export async function stackStatus(cfg: AppConfig): Promise<StackStatus> {
  const pgPid = postgresPid(cfg);
  const tPid = ownedTemporal(cfg);
  const processes = workerProcesses(cfg);
  const temporalUp = await portOpen(temporalPort(cfg), temporalHost(cfg));
  const pgExternal = !pgPid && (!usesEmbeddedPort(cfg) || cfg.databasesChosen);
  const source = new URL(cfg.sourceUrl);
  const parts = {
    postgres: {
      pid: pgPid,
      port: cfg.pgPort,
      external: pgExternal,
      up: pgExternal
        ? await portOpen(Number(source.port || 5432), source.hostname)
        : !!pgPid && (await portOpen(cfg.pgPort)),
    },
    temporal: {
      pid: tPid,
      address: cfg.temporalAddress,
      external: !tPid,
      server: cfg.temporalServer,
      up: temporalUp,
      ui: await portOpen(cfg.temporalUiPort),
    },
  };
  const pollers = temporalUp ? await workerPollers(cfg).catch(() => []) : [];
  const first = processes.find((w) => w.name === 'worker');
  return {
    ...parts,
    worker: { pid: first?.pid, up: !!first?.up, pollers: pollers.length },
    workers: { processes, pollers },
  };
}
