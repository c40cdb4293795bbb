import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../config';
import { ensureDatabaseExists } from '../db/admin';
import { selfSignedArgs } from './certs';
import { isAlive, portOpen, readPid, waitFor } from './proc';
import { withClient } from '../db/client';

/** The private PostgreSQL cluster of `stack up`: initdb on first use, logical WAL, port from config. */
const PG_BIN_CANDIDATES = [
  '/usr/lib/postgresql/15/bin',
  '/usr/lib/postgresql/16/bin',
  '/usr/lib/postgresql/17/bin',
];
const CLUSTER_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_replication_slots: '20',
  max_wal_senders: '20',
  track_commit_timestamp: 'on',
  listen_addresses: "'127.0.0.1'",
  unix_socket_directories: "'/tmp'",
  shared_buffers: "'256MB'",
  max_wal_size: "'2GB'",
  // A stuck slot may not hold more WAL than this: it is invalidated (and reported) instead of filling the disk.
  max_slot_wal_keep_size: "'8GB'",
  wal_sender_timeout: "'60s'",
  logging_collector: 'off',
};

export function pgBinDir(): string {
  const fromEnv = process.env.STATEGRID_PG_BIN;
  const dirs = fromEnv ? [fromEnv] : PG_BIN_CANDIDATES;
  for (const dir of dirs) if (fs.existsSync(path.join(dir, 'pg_ctl'))) return dir;
  throw new Error(
    `PostgreSQL server binaries not found (looked in ${dirs.join(', ')}); install postgresql-15 or set STATEGRID_PG_BIN`,
  );
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** initdb and postgres refuse to run as root, so as root we run them as the `postgres` system user. */
function runAsOwner(cmd: string, args: string[], opts: { input?: string } = {}): string {
  const [file, argv] = isRoot() ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  const res = spawnSync(file, argv, { encoding: 'utf8', input: opts.input });
  if (res.status !== 0) {
    throw new Error(
      `${path.basename(cmd)} failed (exit ${res.status}): ${(res.stderr || res.stdout || '').trim()}`,
    );
  }
  return res.stdout;
}

function ownerCanUse(dir: string): boolean {
  if (!isRoot()) return true;
  return spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-w', dir]).status === 0;
}

export type PgPaths = { dataDir: string; logFile: string; pidFile: string };

/** Data lives under STATEGRID_HOME unless the postgres user cannot reach it (e.g. a clone under /root). */
export function pgPaths(cfg: AppConfig): PgPaths {
  const runDir = path.join(cfg.home, 'run');
  const pointer = path.join(cfg.home, 'pgdata.location');
  let dataDir = path.join(cfg.home, 'pgdata');
  if (fs.existsSync(pointer)) dataDir = fs.readFileSync(pointer, 'utf8').trim();
  return { dataDir, logFile: path.join(dataDir, 'postgres.log'), pidFile: path.join(runDir, 'postgres.pid') };
}

function ensureDataDir(cfg: AppConfig): PgPaths {
  fs.mkdirSync(path.join(cfg.home, 'run'), { recursive: true });
  let paths = pgPaths(cfg);
  if (fs.existsSync(path.join(paths.dataDir, 'PG_VERSION'))) return paths;
  fs.mkdirSync(paths.dataDir, { recursive: true });
  if (isRoot()) {
    execFileSync('chown', ['postgres:postgres', paths.dataDir]);
    if (!ownerCanUse(paths.dataDir)) {
      const hash = crypto.createHash('sha1').update(cfg.home).digest('hex').slice(0, 12);
      const alt = `/var/lib/postgresql/stategrid-${hash}`;
      fs.rmSync(paths.dataDir, { recursive: true, force: true });
      fs.mkdirSync(alt, { recursive: true });
      execFileSync('chown', ['postgres:postgres', alt]);
      fs.writeFileSync(path.join(cfg.home, 'pgdata.location'), alt + '\n');
      paths = pgPaths(cfg);
    }
  }
  return paths;
}

function initdb(bin: string, paths: PgPaths, cfg: AppConfig): void {
  const pwFile = path.join(paths.dataDir, '..', `.pw-${process.pid}`);
  const password = new URL(cfg.sourceUrl).password || 'postgres';
  fs.writeFileSync(pwFile, password + '\n', { mode: 0o644 });
  try {
    runAsOwner(path.join(bin, 'initdb'), [
      '-D',
      paths.dataDir,
      '-U',
      'postgres',
      '--pwfile',
      pwFile,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '-E',
      'UTF8',
      '--locale=C',
    ]);
  } finally {
    fs.rmSync(pwFile, { force: true });
  }
  const conf = Object.entries({ ...CLUSTER_SETTINGS, port: String(cfg.pgPort) })
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  runAsOwner('tee', ['-a', path.join(paths.dataDir, 'postgresql.conf')], {
    input: `\n# stategrid-cdc\n${conf}\n`,
  });
}

export function postgresPid(cfg: AppConfig): number | undefined {
  const { dataDir } = pgPaths(cfg);
  const pid = readPid(path.join(dataDir, 'postmaster.pid'));
  return isAlive(pid) ? pid : undefined;
}

/** Where clients find the embedded cluster's certificate: `?sslmode=verify-full&sslrootcert=<this>`. */
export function tlsRootCert(cfg: AppConfig): string {
  return path.join(cfg.home, 'tls', 'root.crt');
}

/**
 * TLS for the embedded cluster: a self-signed certificate for 127.0.0.1, made once with openssl. Clients choose
 * with `sslmode` in their URL (plain connections keep working); without openssl the cluster stays plain.
 */
function ensureTls(paths: PgPaths, cfg: AppConfig, log: (m: string) => void): void {
  const crt = path.join(paths.dataDir, 'server.crt');
  const key = path.join(paths.dataDir, 'server.key');
  if (!fs.existsSync(crt)) {
    if (spawnSync('openssl', ['version']).status !== 0) {
      log('openssl not found: the embedded PostgreSQL runs without TLS');
      return;
    }
    runAsOwner('openssl', selfSignedArgs('/CN=127.0.0.1', key, crt, 'IP:127.0.0.1,DNS:localhost'));
    runAsOwner('chmod', ['600', key]);
    runAsOwner('tee', ['-a', path.join(paths.dataDir, 'postgresql.conf')], {
      input: `\n# stategrid-cdc TLS (clients opt in with sslmode)\nssl = on\n`,
    });
  }
  const root = tlsRootCert(cfg);
  fs.mkdirSync(path.dirname(root), { recursive: true });
  fs.writeFileSync(root, runAsOwner('cat', [crt]));
}

/** Source or sink is on the embedded cluster's address (this machine, STATEGRID_PG_PORT). */
export function usesEmbeddedPort(cfg: AppConfig): boolean {
  return [cfg.sourceUrl, cfg.sinkUrl].some((url) => {
    const u = new URL(url);
    return ['127.0.0.1', 'localhost'].includes(u.hostname) && Number(u.port || 5432) === cfg.pgPort;
  });
}

/**
 * Starts the embedded cluster unless the databases are elsewhere: URLs that point at other servers, or at a
 * cluster already answering on the port that the operator chose with STATEGRID_SOURCE_URL/SINK_URL, are
 * external: used as they are, never initialised, started or stopped here.
 */
export async function startPostgres(
  cfg: AppConfig,
  log: (m: string) => void,
): Promise<'running' | 'started' | 'external'> {
  if (!usesEmbeddedPort(cfg)) return 'external';
  if (cfg.databasesChosen && !postgresPid(cfg) && (await portOpen(cfg.pgPort))) return 'external';
  const bin = pgBinDir();
  const paths = ensureDataDir(cfg);
  const running = postgresPid(cfg);
  if (running && (await portOpen(cfg.pgPort))) {
    fs.writeFileSync(paths.pidFile, `${running}\n`);
    return 'running';
  }
  if (!fs.existsSync(path.join(paths.dataDir, 'PG_VERSION'))) {
    log(`initdb: new PostgreSQL cluster in ${paths.dataDir}`);
    initdb(bin, paths, cfg);
  }
  ensureTls(paths, cfg, log);
  if (!running && (await portOpen(cfg.pgPort))) {
    throw new Error(
      `port ${cfg.pgPort} is already used by another process (set STATEGRID_PG_PORT to another port, or ` +
        'STATEGRID_SOURCE_URL/STATEGRID_SINK_URL to use that server)',
    );
  }
  // After a kill -9 of the postmaster its orphaned backends hold shared memory for a moment: retry until they exit.
  for (let attempt = 1; ; attempt++) {
    try {
      runAsOwner(path.join(bin, 'pg_ctl'), [
        '-D',
        paths.dataDir,
        '-l',
        paths.logFile,
        '-w',
        '-t',
        '60',
        'start',
      ]);
      break;
    } catch (err) {
      if (attempt >= 15) throw err;
      log(`postgres did not start yet (attempt ${attempt}); retrying`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  await waitFor(`PostgreSQL on port ${cfg.pgPort}`, () => portOpen(cfg.pgPort), 30000);
  const pid = postgresPid(cfg);
  if (pid) fs.writeFileSync(paths.pidFile, `${pid}\n`);
  await ensureDatabase(cfg);
  return 'started';
}

/** Creates the source and sink databases named in the URLs when they are on this cluster. */
export async function ensureDatabase(cfg: AppConfig): Promise<void> {
  for (const url of new Set([cfg.sourceUrl, cfg.sinkUrl])) {
    const u = new URL(url);
    if (Number(u.port || 5432) !== cfg.pgPort || !['127.0.0.1', 'localhost'].includes(u.hostname)) continue;
    const dbName = decodeURIComponent(u.pathname.slice(1));
    u.pathname = '/postgres';
    await withClient(u.toString(), (client) => ensureDatabaseExists(client, dbName));
  }
}

export async function stopPostgres(cfg: AppConfig): Promise<boolean> {
  const paths = pgPaths(cfg);
  const pid = postgresPid(cfg);
  fs.rmSync(paths.pidFile, { force: true });
  if (!pid) return false;
  const pgCtl = path.join(pgBinDir(), 'pg_ctl');
  try {
    runAsOwner(pgCtl, ['-D', paths.dataDir, '-m', 'fast', '-w', '-t', '30', 'stop']);
  } catch {
    // A logical walsender waits for its client to confirm the last WAL; when that client writes to this very
    // cluster (sink = source) it never can, until wal_sender_timeout. Committed data is in the WAL: go on.
    runAsOwner(pgCtl, ['-D', paths.dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop']);
  }
  return true;
}
