import fs from 'node:fs';
import path from 'node:path';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { NativeConnectionOptions } from '@temporalio/worker';

/**
 * How worker, CLI and tests reach Temporal: the SDK's own reader of connection profiles (TOML file at
 * TEMPORAL_CONFIG_FILE or the user's config dir, profile TEMPORAL_PROFILE) and of the variables the `temporal` CLI
 * reads (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*), with our defaults for the
 * embedded dev server. A bad value fails here, naming the setting; secrets are never part of any message.
 */
export type TemporalSettings = {
  address: string;
  namespace: string;
  /** For `NativeConnection.connect` (worker) and `Connection.connect` (clients). */
  connection: NativeConnectionOptions;
  /** TLS or an API key is in use: the server is not the embedded plain-text dev server. */
  secured: boolean;
  /** One line for logs: address, namespace and how it authenticates, without secrets. */
  summary: string;
};

export const DEFAULT_TEMPORAL_ADDRESS = '127.0.0.1:7233';
const BOOLEAN = /^(1|0|true|false)$/;
const PATH_SETTINGS = [
  'TEMPORAL_TLS_CLIENT_CERT_PATH',
  'TEMPORAL_TLS_CLIENT_KEY_PATH',
  'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
  'TEMPORAL_CONFIG_FILE',
] as const;

export class TemporalSettingError extends Error {
  constructor(setting: string, problem: string) {
    super(`invalid configuration: ${setting}: ${problem}`);
    this.name = 'TemporalSettingError';
  }
}

export function loadTemporalSettings(env: NodeJS.ProcessEnv = process.env): TemporalSettings {
  checkVariables(env);
  let loaded: ReturnType<typeof loadClientConnectConfig>;
  try {
    loaded = loadClientConnectConfig({ overrideEnvVars: definedOnly(env) });
  } catch (err) {
    // Profile file or profile name problems; the library's message names the key, never a value.
    const setting = env.TEMPORAL_PROFILE ? 'TEMPORAL_PROFILE' : 'TEMPORAL_CONFIG_FILE';
    throw new TemporalSettingError(setting, err instanceof Error ? err.message : String(err));
  }
  const address = loaded.connectionOptions.address ?? DEFAULT_TEMPORAL_ADDRESS;
  if (!/^[\w.-]+:\d+$/.test(address)) throw new TemporalSettingError('TEMPORAL_ADDRESS', 'must be host:port');
  const namespace = loaded.namespace ?? 'default';
  if (!/^[\w.-]+$/.test(namespace))
    throw new TemporalSettingError('TEMPORAL_NAMESPACE', 'must be a namespace name');
  const connection = { ...loaded.connectionOptions, address };
  const tls = connection.tls;
  const secured = !!tls || !!connection.apiKey;
  const auth = [
    tls ? (typeof tls === 'object' && tls.clientCertPair ? 'mTLS' : 'TLS') : 'plain text',
    connection.apiKey ? 'API key' : null,
  ].filter(Boolean);
  return {
    address,
    namespace,
    connection,
    secured,
    summary: `${address} namespace ${namespace} (${auth.join(', ')})`,
  };
}

function checkVariables(env: NodeJS.ProcessEnv) {
  for (const name of ['TEMPORAL_TLS', 'TEMPORAL_TLS_DISABLE_HOST_VERIFICATION']) {
    const v = env[name];
    if (v !== undefined && v !== '' && !BOOLEAN.test(v))
      throw new TemporalSettingError(name, 'must be true or false');
  }
  for (const name of PATH_SETTINGS) {
    const file = env[name];
    if (!file) continue;
    try {
      fs.accessSync(file, fs.constants.R_OK);
    } catch {
      throw new TemporalSettingError(name, `cannot read ${file}`);
    }
  }
  const cert = !!(env.TEMPORAL_TLS_CLIENT_CERT_PATH || env.TEMPORAL_TLS_CLIENT_CERT_DATA);
  const key = !!(env.TEMPORAL_TLS_CLIENT_KEY_PATH || env.TEMPORAL_TLS_CLIENT_KEY_DATA);
  if (cert !== key) {
    const missing = cert ? 'TEMPORAL_TLS_CLIENT_KEY_PATH' : 'TEMPORAL_TLS_CLIENT_CERT_PATH';
    throw new TemporalSettingError(missing, 'a client certificate and its key are set together');
  }
  if (env.TEMPORAL_API_KEY !== undefined && env.TEMPORAL_API_KEY.trim() === '') {
    throw new TemporalSettingError('TEMPORAL_API_KEY', 'is empty');
  }
}

/** Empty variables count as unset, as in a shell `VAR= cmd`. */
function definedOnly(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => !!e[1]));
}

/** Settings that choose a Temporal connection; any of them set means the user chose, not the stack. */
const CONNECTION_SETTINGS = /^TEMPORAL_(ADDRESS|NAMESPACE|CONFIG_FILE|PROFILE|API_KEY|TLS.*)$/;
export const STACK_PROFILE = 'stategrid';

/**
 * The client profile `stack up --temporal server` writes under STATEGRID_HOME (address, namespace, client
 * certificate). Commands of that home use it unless a TEMPORAL_* connection setting says otherwise.
 */
export function stackClientProfile(home: string, env: NodeJS.ProcessEnv) {
  const file = path.join(home, 'temporal-server', 'client.toml');
  const exists = fs.existsSync(file);
  const userChose = Object.keys(env).some((k) => CONNECTION_SETTINGS.test(k) && !!env[k]);
  return {
    file,
    exists,
    env: exists && !userChose ? { TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: STACK_PROFILE } : undefined,
  };
}
