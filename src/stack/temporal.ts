import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AppConfig } from '../config';
import { SEARCH_ATTRIBUTES } from '../temporal/search-attributes';

/** Pinned Temporal CLI version, docs/cli.md#the-temporal-binary; older tags are tried if it fails to build. */
export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';
export const TEMPORAL_CLI_VERSIONS = ['v1.5.1', 'v1.5.0', 'v1.4.1'];

export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'stategrid');
}

export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      /* keep looking */
    }
  }
  return undefined;
}

/** `go install` of pinned packages, printing compiled packages now and then so the first (slow) build shows progress. */
export function goInstall(packages: string[], gobin: string, log: (m: string) => void): Promise<boolean> {
  const label = packages.map((p) => p.split('/').slice(-2).join('/')).join(', ');
  return new Promise((resolve) => {
    log(`building ${label} with Go into ${gobin} (first time only, takes a few minutes)`);
    const child = spawn('go', ['install', '-v', ...packages], {
      env: { ...process.env, GOBIN: gobin, GOFLAGS: '-mod=mod', CGO_ENABLED: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let built = 0;
    let lastReport = Date.now();
    const onLine = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line.trim()) continue;
        if (line.startsWith('go: downloading')) continue;
        built += 1;
        if (Date.now() - lastReport > 5000) {
          lastReport = Date.now();
          log(`  go build: ${built} packages compiled (now ${line.trim()})`);
        }
      }
    };
    child.stdout.on('data', onLine);
    child.stderr.on('data', onLine);
    child.on('close', (code) => {
      log(
        code === 0 ? `  go build done (${built} packages)` : `  go build of ${label} failed (exit ${code})`,
      );
      resolve(code === 0);
    });
    child.on('error', () => resolve(false));
  });
}

/** Finds or provisions the `temporal` binary: $TEMPORAL_CLI, PATH, cache, go install, then the SDK download. */
export async function resolveTemporalCli(cfg: AppConfig, log: (m: string) => void): Promise<string> {
  if (cfg.temporalCli) {
    if (!fs.existsSync(cfg.temporalCli))
      throw new Error(`TEMPORAL_CLI points to a missing file: ${cfg.temporalCli}`);
    return cfg.temporalCli;
  }
  const fromPath = onPath('temporal');
  if (fromPath) return fromPath;
  const gobin = path.join(cacheDir(), 'bin');
  const cached = path.join(gobin, 'temporal');
  if (fs.existsSync(cached)) return cached;
  fs.mkdirSync(gobin, { recursive: true });
  if (onPath('go')) {
    for (const version of TEMPORAL_CLI_VERSIONS) {
      const built = await goInstall([`${TEMPORAL_CLI_MODULE}@${version}`], gobin, log);
      if (built && fs.existsSync(cached)) return cached;
    }
  }
  // The SDK's cached download needs the internet; it is the tests' last resort (see test/setup), not the stack's.
  throw new Error(
    'could not provision the Temporal CLI: install Go (to build it) or put `temporal` on PATH / set TEMPORAL_CLI',
  );
}

export function temporalVersion(bin: string): string {
  const res = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return (res.stdout || '').trim();
}

export function temporalServerArgs(cfg: AppConfig): string[] {
  const [host, port] = cfg.temporalAddress.split(':');
  const args = [
    'server',
    'start-dev',
    '--ip',
    host,
    '--port',
    port,
    '--ui-port',
    String(cfg.temporalUiPort),
    '--db-filename',
    path.join(cfg.home, 'temporal', 'temporal.db'),
    '--namespace',
    cfg.temporalNamespace,
    '--log-level',
    'warn',
  ];
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES))
    args.push('--search-attribute', `${name}=${type}`);
  return args;
}
