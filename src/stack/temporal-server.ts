import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { parse, stringify } from 'yaml';
import type { AppConfig } from '../config';
import { databaseExists, ensureLoginRole, tableExists } from '../db/admin';
import { withClient } from '../db/client';
import { ensureMtlsCertificates, type MtlsFiles } from './certs';
import { STACK_PROFILE, stackClientProfile } from '../temporal/settings';
import { waitFor } from './proc';
import { cacheDir, goInstall, onPath } from './temporal';

/**
 * `stack up --temporal server`: the production Temporal server (not the dev server) with its persistence in
 * PostgreSQL (databases `temporal` and `temporal_visibility`, schema applied by Temporal's own sql tool) and
 * mutual TLS on the frontend. docs/cli.md#a-production-style-temporal-server.
 */
export const TEMPORAL_SERVER_MODULE = 'go.temporal.io/server';
export const TEMPORAL_SERVER_VERSION = 'v1.29.1';

/** What the pinned server release brings: two binaries, its PostgreSQL schema and its config template. */
export type ServerKit = { server: string; sqlTool: string; schemaDir: string; configTemplate: string };

export function serverKit(): ServerKit {
  const dir = path.join(cacheDir(), 'temporal-server', TEMPORAL_SERVER_VERSION);
  return {
    server: path.join(dir, 'bin', 'server'),
    sqlTool: path.join(dir, 'bin', 'sql'),
    schemaDir: path.join(dir, 'schema', 'postgresql', 'v12'),
    configTemplate: path.join(dir, 'config', 'development-postgres12.yaml'),
  };
}

const kitComplete = (kit: ServerKit) => Object.values(kit).every((p) => fs.existsSync(p));

/** Builds the pinned server and sql tool with `go install` (once) and keeps the release's schema and config beside. */
export async function resolveServerKit(log: (m: string) => void): Promise<ServerKit> {
  const kit = serverKit();
  if (kitComplete(kit)) return kit;
  if (!onPath('go')) throw new Error('Go is required to build the Temporal server for --temporal server');
  const at = `@${TEMPORAL_SERVER_VERSION}`;
  const packages = [
    `${TEMPORAL_SERVER_MODULE}/cmd/server${at}`,
    `${TEMPORAL_SERVER_MODULE}/cmd/tools/sql${at}`,
  ];
  if (!(await goInstall(packages, path.dirname(kit.server), log)))
    throw new Error(`go install of the Temporal server ${TEMPORAL_SERVER_VERSION} failed`);
  // The schema and the config template are files of the same module: go install has just downloaded it.
  const res = spawnSync('go', ['mod', 'download', '-json', `${TEMPORAL_SERVER_MODULE}${at}`], {
    encoding: 'utf8',
  });
  const moduleDir = res.status === 0 ? (JSON.parse(res.stdout) as { Dir?: string }).Dir : undefined;
  if (!moduleDir) throw new Error(`go mod download ${TEMPORAL_SERVER_MODULE}${at} failed: ${res.stderr}`);
  fs.cpSync(path.join(moduleDir, 'schema', 'postgresql', 'v12'), kit.schemaDir, { recursive: true });
  fs.mkdirSync(path.dirname(kit.configTemplate), { recursive: true });
  fs.copyFileSync(path.join(moduleDir, 'config', 'development-postgres12.yaml'), kit.configTemplate);
  // Module files are read-only in Go's cache; ours must stay removable.
  spawnSync('chmod', ['-R', 'u+w', path.dirname(kit.schemaDir), path.dirname(kit.configTemplate)]);
  return kit;
}

/** Where the running server keeps its config, certificates and the client profile. */
export function serverHome(cfg: AppConfig) {
  const dir = path.join(cfg.home, 'temporal-server');
  return {
    dir,
    configDir: path.join(dir, 'config'),
    tlsDir: path.join(dir, 'tls'),
    dynamicConfig: path.join(dir, 'dynamicconfig.yaml'),
    passwordFile: path.join(dir, 'persistence-password'),
    clientProfile: stackClientProfile(cfg.home, {}).file,
  };
}

/** Ports of the four services, laid out around the frontend port like the release's development config. */
export function serverPorts(frontend: number) {
  return {
    frontend: { grpcPort: frontend, membershipPort: frontend - 300, httpPort: frontend + 10 },
    history: { grpcPort: frontend + 1, membershipPort: frontend - 299 },
    matching: { grpcPort: frontend + 2, membershipPort: frontend - 298 },
    worker: { grpcPort: frontend + 6, membershipPort: frontend - 294 },
  };
}

const PERSISTENCE_ROLE = 'temporal';
const DATABASES = { temporal: 'temporal', temporal_visibility: 'visibility' } as const;

function persistencePassword(file: string): string {
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const password = crypto.randomBytes(18).toString('base64url');
  fs.writeFileSync(file, `${password}\n`, { mode: 0o600 });
  return password;
}

/** STATEGRID_TEMPORAL_PERSISTENCE_URL, else the source URL's server; its role must create roles and databases. */
function adminUrl(cfg: AppConfig): string {
  const url = new URL(cfg.temporalPersistenceUrl ?? cfg.sourceUrl);
  url.pathname = '/postgres';
  return url.toString();
}

/** Role, both databases and their schema, by Temporal's sql tool; every step is skipped or a no-op when done. */
export async function preparePersistence(
  cfg: AppConfig,
  kit: ServerKit,
  log: (m: string) => void,
): Promise<string> {
  const home = serverHome(cfg);
  fs.mkdirSync(home.dir, { recursive: true });
  const password = persistencePassword(home.passwordFile);
  await withClient(adminUrl(cfg), (c) => ensureLoginRole(c, PERSISTENCE_ROLE, password, { createDb: true }));
  const server = new URL(adminUrl(cfg));
  const sql = (db: string, ...args: string[]) => {
    const res = spawnSync(
      kit.sqlTool,
      [
        '--plugin',
        'postgres12',
        '--ep',
        server.hostname,
        '-p',
        server.port || '5432',
        '-u',
        PERSISTENCE_ROLE,
        '--db',
        db,
        ...args,
      ],
      { encoding: 'utf8', env: { ...process.env, SQL_PASSWORD: password } },
    );
    if (res.status !== 0)
      throw new Error(`temporal sql tool ${args[0]} on ${db} failed: ${(res.stderr || res.stdout).trim()}`);
  };
  for (const [db, schema] of Object.entries(DATABASES)) {
    const url = new URL(adminUrl(cfg));
    if (!(await withClient(url.toString(), (c) => databaseExists(c, db)))) {
      log(`temporal server: creating database ${db}`);
      sql(db, 'create-database');
    }
    url.pathname = `/${db}`;
    if (!(await withClient(url.toString(), (c) => tableExists(c, 'schema_version'))))
      sql(db, 'setup-schema', '-v', '0.0');
    sql(db, 'update-schema', '-d', path.join(kit.schemaDir, schema, 'versioned'));
  }
  return password;
}

/** The parts of the release's server config we change. */
type ServerYaml = {
  persistence: { datastores: Record<string, { sql: Record<string, unknown> }> };
  services: Record<string, { rpc: Record<string, unknown> }>;
  global: Record<string, unknown>;
  clusterMetadata: { clusterInformation: { active: { rpcAddress: string } } };
  dynamicConfigClient?: unknown;
};

/** The release's development-postgres12 config with our ports, credentials, mTLS and no fixed side ports. */
export function serverConfig(cfg: AppConfig, kit: ServerKit, password: string, tls: MtlsFiles): string {
  const [host, frontendPort] = cfg.temporalAddress.split(':');
  const doc = parse(fs.readFileSync(kit.configTemplate, 'utf8')) as ServerYaml;
  const server = new URL(adminUrl(cfg));
  const connectAddr = `${server.hostname}:${server.port || '5432'}`;
  for (const store of Object.values(doc.persistence.datastores))
    Object.assign(store.sql, { connectAddr, user: PERSISTENCE_ROLE, password });
  const ports = serverPorts(Number(frontendPort));
  for (const [service, rpc] of Object.entries(ports)) Object.assign(doc.services[service].rpc, rpc);
  doc.global.pprof = { port: 0 };
  delete doc.global.metrics; // no fixed metrics port beside the stack's own
  const client = { serverName: tls.serverName, rootCaFiles: [tls.caCert] };
  doc.global.tls = {
    frontend: {
      server: {
        certFile: tls.serverCert,
        keyFile: tls.serverKey,
        requireClientAuth: true,
        clientCaFiles: [tls.caCert],
      },
      client,
    },
    // The server's own system workers are clients of the frontend too, with the same client certificate.
    systemWorker: { certFile: tls.clientCert, keyFile: tls.clientKey, client },
  };
  doc.clusterMetadata.clusterInformation.active.rpcAddress = `${host}:${frontendPort}`;
  doc.dynamicConfigClient = { filepath: serverHome(cfg).dynamicConfig, pollInterval: '10s' };
  return stringify(doc);
}

/** Custom search attributes are cached by the frontend; refreshing on read makes a new one usable at once. */
const DYNAMIC_CONFIG = `limit.maxIDLength:
  - value: 255
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
`;

/** A `temporal` CLI / envconfig profile that reaches this server with the client certificate. */
export function clientProfileToml(cfg: AppConfig, tls: MtlsFiles): string {
  const q = (v: string) => JSON.stringify(v);
  return [
    `[profile.${STACK_PROFILE}]`,
    `address = ${q(cfg.temporalAddress)}`,
    `namespace = ${q(cfg.temporalNamespace)}`,
    `[profile.${STACK_PROFILE}.tls]`,
    `client_cert_path = ${q(tls.clientCert)}`,
    `client_key_path = ${q(tls.clientKey)}`,
    `server_ca_cert_path = ${q(tls.caCert)}`,
    `server_name = ${q(tls.serverName)}`,
    '',
  ].join('\n');
}

/** Everything the server process needs on disk; returns its argv and the environment its clients use. */
export async function prepareTemporalServer(cfg: AppConfig, log: (m: string) => void) {
  const kit = await resolveServerKit(log);
  const home = serverHome(cfg);
  const tls = ensureMtlsCertificates(home.tlsDir);
  const password = await preparePersistence(cfg, kit, log);
  fs.mkdirSync(home.configDir, { recursive: true });
  fs.writeFileSync(path.join(home.configDir, 'stategrid.yaml'), serverConfig(cfg, kit, password, tls), {
    mode: 0o600,
  });
  fs.writeFileSync(home.dynamicConfig, DYNAMIC_CONFIG);
  fs.writeFileSync(home.clientProfile, clientProfileToml(cfg, tls));
  return {
    version: TEMPORAL_SERVER_VERSION,
    bin: kit.server,
    args: ['--root', home.dir, '--config', 'config', '--env', 'stategrid', '--allow-no-auth', 'start'],
    clientEnv: { TEMPORAL_CONFIG_FILE: home.clientProfile, TEMPORAL_PROFILE: STACK_PROFILE },
  };
}

const ALREADY_EXISTS = 6;

/** The production server starts without namespaces; a new one is usable once the frontend's cache has it. */
export async function ensureNamespace(connection: Connection, namespace: string): Promise<void> {
  try {
    await connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs('7 days'),
    });
  } catch (err) {
    if ((err as { code?: number }).code !== ALREADY_EXISTS) throw err;
  }
  await waitFor(
    `namespace ${namespace} on the Temporal server`,
    () =>
      connection.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 }).then(
        () => true,
        () => false,
      ),
    60000,
  );
}
