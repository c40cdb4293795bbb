import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import {
  loadTemporalSettings,
  stackClientProfile,
  TemporalSettingError,
  type TemporalSettings,
} from './temporal/settings';

/**
 * Workflow task timeout of the pipeline and day-recompute runs (Temporal's default is 10 s). A workflow task that a
 * killed worker had started is given up only after it, and the capture's own timeout waits behind it, so it bounds
 * a takeover. It must still cover a cold replay of a whole run under load: 200 events (the pipeline's
 * maxHistoryEvents) replayed in up to 1.5 s, 250 in up to 2.4 s at load average ~10 on 2 cores (docs/architecture.md).
 */
export const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS = 5000;
/** Temporal caps a workflow task timeout at 120 s; below 1 s a replay of any real history would not fit. */
export const WORKFLOW_TASK_TIMEOUT_LIMITS_MS = { min: 1000, max: 120000 } as const;

/** Environment settings of docs/cli.md#settings, validated once; a bad value names its variable. */
const urlSetting = z
  .string()
  .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
  .refine((v) => {
    try {
      new URL(v);
      return true;
    } catch {
      return false;
    }
  }, 'is not a valid URL');

const port = z.coerce.number().int().min(1).max(65535);

const envSchema = z.object({
  STATEGRID_HOME: z.string().min(1).default('./.stategrid'),
  STATEGRID_PG_PORT: port.default(54329),
  STATEGRID_SOURCE_URL: urlSetting.optional(),
  STATEGRID_SINK_URL: urlSetting.optional(),
  STATEGRID_TEMPORAL_UI_PORT: port.default(8233),
  STATEGRID_TASK_QUEUE: z
    .string()
    .regex(/^[\w.-]+$/, 'must be a task queue name')
    .default('stategrid-cdc'),
  STATEGRID_DECODING_PLUGIN: z.enum(['pgoutput', 'wal2json']).default('pgoutput'),
  STATEGRID_TIME_ZONE: z
    .string()
    .refine((tz) => {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: tz });
        return true;
      } catch {
        return false;
      }
    }, 'is not a known IANA time zone')
    .default('Asia/Shanghai'),
  STATEGRID_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  STATEGRID_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STATEGRID_TEMPORAL_SERVER: z.enum(['dev', 'server']).optional(),
  STATEGRID_RECOMPUTE_CONCURRENCY: z.coerce.number().int().min(1).max(16).default(4),
  STATEGRID_DECODING_WORK_MEM_MB: z.coerce.number().int().min(0).max(16384).default(512),
  STATEGRID_WORKFLOW_TASK_TIMEOUT_MS: z.coerce
    .number()
    .int()
    .min(WORKFLOW_TASK_TIMEOUT_LIMITS_MS.min)
    .max(WORKFLOW_TASK_TIMEOUT_LIMITS_MS.max)
    .default(DEFAULT_WORKFLOW_TASK_TIMEOUT_MS),
  STATEGRID_WORKER_ID: z
    .string()
    .regex(/^[\w.-]+$/, 'must be letters, digits, dot, dash or underscore')
    .max(100)
    .optional(),
  STATEGRID_WORKER_NAME: z
    .string()
    .regex(/^[\w.-]+$/, 'must be letters, digits, dot, dash or underscore')
    .default('worker'),
  STATEGRID_TEMPORAL_PERSISTENCE_URL: urlSetting.optional(),
  TEMPORAL_CLI: z.string().optional(),
});

export type AppConfig = {
  home: string;
  pgPort: number;
  sourceUrl: string;
  sinkUrl: string;
  /** STATEGRID_SOURCE_URL or STATEGRID_SINK_URL was given: the operator chose the databases. */
  databasesChosen: boolean;
  temporalAddress: string;
  temporalNamespace: string;
  /** Connection to Temporal from profiles and TEMPORAL_* variables (see src/temporal/settings.ts). */
  temporal: TemporalSettings;
  temporalUiPort: number;
  /** Which Temporal `stack up` runs locally: the dev server, or the production server with mTLS. */
  temporalServer: 'dev' | 'server';
  /** The connection comes from the profile `stack up --temporal server` wrote (no TEMPORAL_* setting given). */
  temporalFromStack: boolean;
  /** Admin URL of the PostgreSQL server that holds the local production server's databases. */
  temporalPersistenceUrl?: string;
  taskQueue: string;
  /** This worker process: unique identity (Web UI, status) and the task queue only it polls (capture affinity). */
  workerId: string;
  workerQueue: string;
  /** Days a range recompute or backfill runs at once. */
  recomputeConcurrency: number;
  /**
   * logical_decoding_work_mem of this worker's replication connections, in MB; 0 keeps the server's. Above it the
   * walsender spills a transaction's changes to disk and reads them back at its commit.
   */
  decodingWorkMemMb: number;
  /** Workflow task timeout of the pipeline and day-recompute runs this client starts (and the pipeline's default). */
  workflowTaskTimeoutMs: number;
  /** Name of this worker's pid/ready files under STATEGRID_HOME/run (`stack up --workers N`). */
  workerName: string;
  decodingPlugin: 'pgoutput' | 'wal2json';
  timeZone: string;
  metricsPort: number;
  logLevel: string;
  temporalCli?: string;
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Reads and validates the environment; throws ConfigError naming the first bad setting. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${issues.join('; ')}`);
  }
  const e = parsed.data;
  const home = path.resolve(e.STATEGRID_HOME);
  const stack = stackClientProfile(home, env);
  const temporalServer = e.STATEGRID_TEMPORAL_SERVER ?? (stack.exists ? 'server' : 'dev');
  const fromStack = temporalServer === 'server' && !!stack.env;
  let temporal: TemporalSettings;
  try {
    temporal = loadTemporalSettings(fromStack ? { ...env, ...stack.env } : env);
  } catch (err) {
    if (err instanceof TemporalSettingError) throw new ConfigError(err.message);
    throw err;
  }
  // Host and process: unique across hosts and restarts, so a restarted worker never inherits a dead one's queue.
  const workerId = e.STATEGRID_WORKER_ID ?? `${os.hostname().replace(/[^\w.-]/g, '-')}-${process.pid}`;
  const sourceUrl =
    e.STATEGRID_SOURCE_URL ?? `postgres://postgres:postgres@127.0.0.1:${e.STATEGRID_PG_PORT}/stategrid_db`;
  return {
    home,
    pgPort: e.STATEGRID_PG_PORT,
    sourceUrl,
    sinkUrl: e.STATEGRID_SINK_URL ?? sourceUrl,
    databasesChosen: !!(e.STATEGRID_SOURCE_URL || e.STATEGRID_SINK_URL),
    temporalAddress: temporal.address,
    temporalNamespace: temporal.namespace,
    temporal,
    temporalUiPort: e.STATEGRID_TEMPORAL_UI_PORT,
    temporalServer,
    temporalFromStack: fromStack,
    temporalPersistenceUrl: e.STATEGRID_TEMPORAL_PERSISTENCE_URL,
    taskQueue: e.STATEGRID_TASK_QUEUE,
    workerId,
    workerQueue: `${e.STATEGRID_TASK_QUEUE}@${workerId}`,
    workerName: e.STATEGRID_WORKER_NAME,
    recomputeConcurrency: e.STATEGRID_RECOMPUTE_CONCURRENCY,
    decodingWorkMemMb: e.STATEGRID_DECODING_WORK_MEM_MB,
    workflowTaskTimeoutMs: e.STATEGRID_WORKFLOW_TASK_TIMEOUT_MS,
    decodingPlugin: e.STATEGRID_DECODING_PLUGIN,
    timeZone: e.STATEGRID_TIME_ZONE,
    metricsPort: e.STATEGRID_METRICS_PORT,
    logLevel: e.STATEGRID_LOG_LEVEL,
    temporalCli: e.TEMPORAL_CLI,
  };
}

/** A URL with its password replaced, for logs and error messages. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:\/\/([^:/@]+):[^@]*@/, '://$1:***@');
  }
}
