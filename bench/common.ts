/** What the bench's phases share: queries, timing, CPU sampling and the steady load with its latency. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../src/config';
import { waitCaughtUp } from '../src/control/pipeline';
import { withClient } from '../src/db/client';
import { verifyWarehouse } from '../src/verify/warehouse';

export type Figure = {
  name: string;
  ours: number;
  unit: string;
  limit?: number;
  limitName?: string;
  target?: string;
};

export const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

async function rowsAt<T>(url: string, query: string, params: unknown[]): Promise<T[]> {
  return withClient(url, async (c) => (await c.query(query, params)).rows as T[]);
}

/** Rows of a query on the source. */
export const sql = <T = Record<string, unknown>>(cfg: AppConfig, query: string, params: unknown[] = []) =>
  rowsAt<T>(cfg.sourceUrl, query, params);

/** Same, on the sink (the source database unless `--sink-db`). */
export const sinkSql = <T = Record<string, unknown>>(cfg: AppConfig, query: string, params: unknown[] = []) =>
  rowsAt<T>(cfg.sinkUrl, query, params);

/** Linear-interpolated percentile, as PostgreSQL's percentile_cont. */
export function percentile(values: number[], q: number): number {
  const v = [...values].sort((x, y) => x - y);
  const pos = (v.length - 1) * q;
  const lo = Math.floor(pos);
  return v[lo] + (v[Math.min(lo + 1, v.length - 1)] - v[lo]) * (pos - lo);
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU seconds (user + system) a process has used so far, or null once it is gone. */
export function processCpuSeconds(pid: number, withReapedChildren = false): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    const reaped = withReapedChildren ? Number(fields[13]) + Number(fields[14]) : 0;
    return (own + reaped) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/**
 * CPU seconds used so far by the whole embedded PostgreSQL cluster: the postmaster, every live backend and every
 * backend that has ended (the postmaster reaps them, so their time is in its children's counters). Short-lived
 * connections, like a snapshot chunk's source reader, count too.
 */
export function clusterCpuSeconds(cfg: AppConfig): number {
  const postmaster = Number(
    fs.readFileSync(path.join(cfg.home, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0],
  );
  let total = processCpuSeconds(postmaster, true) ?? 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === postmaster) total += processCpuSeconds(Number(entry)) ?? 0;
    } catch {
      // the process ended between the listing and the read
    }
  }
  return total;
}

/** Consumptions whose day follows their id: `days` days from `firstDay`, every second of each day used in turn. */
export const SPREAD_CONSUMPTIONS = `INSERT INTO power_consumption
  SELECT g, 1 + g % $3::int, (g % 50000) / 100.0, (g % 30000) / 100.0,
    $4::date + make_interval(days => (g % $5::int)::int, secs => (g / $5::int) % 86400)
  FROM generate_series($1::bigint, $2::bigint) g`;

export type SteadyLoad = {
  firstId: number;
  rows: number;
  users: number;
  /** Rows per source transaction; one transaction every `everyMs`. */
  perTx: number;
  everyMs: number;
  /** The day the rows fall on (an open day, so no late-event path is measured). */
  at: string;
};

/** Offers the load at its rate: each transaction at its due time, whatever the previous one took. */
export async function offerSteadyLoad(cfg: AppConfig, load: SteadyLoad): Promise<void> {
  await withClient(cfg.sourceUrl, async (c) => {
    const start = Date.now();
    for (let i = 0; i < load.rows / load.perTx; i++) {
      const wait = start + i * load.everyMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const a = load.firstId + i * load.perTx;
      await c.query(
        `INSERT INTO power_consumption SELECT g, 1 + g % $3::int, 1.00, 0.50, $4::timestamp
         FROM generate_series($1::bigint, $2::bigint) g`,
        [a, a + load.perTx - 1, load.users, load.at],
      );
    }
  });
}

export type Latency = { p50: number; p95: number; p99: number; rows: number };

/**
 * Commit -> DWD delay of each consumption from `firstId` on: the source transaction's commit timestamp against the
 * commit timestamp of the sink transaction that wrote its DWD row (both `track_commit_timestamp`, one cluster
 * clock), so the write and its commit are inside the figure. Read separately: the sink may be another database.
 */
export async function commitToDwdLatency(cfg: AppConfig, firstId: number): Promise<Latency> {
  const committed = await sql<{ id: string; t: string }>(
    cfg,
    `SELECT consumption_id::text AS id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::text AS t
     FROM power_consumption WHERE consumption_id >= $1`,
    [firstId],
  );
  const applied = new Map(
    (
      await sinkSql<{ id: string; t: string }>(
        cfg,
        `SELECT consumption_id::text AS id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::text AS t
         FROM dwd_power_consumption_detail WHERE consumption_id >= $1`,
        [firstId],
      )
    ).map((r) => [r.id, Number(r.t)]),
  );
  const delays = committed.map((c) => (applied.get(c.id) ?? NaN) - Number(c.t));
  if (!delays.length || delays.some(Number.isNaN))
    throw new Error('latency rows missing from DWD after catching up');
  return {
    p50: percentile(delays, 0.5),
    p95: percentile(delays, 0.95),
    p99: percentile(delays, 0.99),
    rows: delays.length,
  };
}

/** Ends a part: the warehouse must equal its source, or the run fails instead of reporting a figure. */
export async function mustEqualSource(cfg: AppConfig, pipelineId: string, part: string): Promise<void> {
  if (!(await waitCaughtUp(cfg, pipelineId, 600_000))) throw new Error(`${part}: not caught up`);
  const verified = await verifyWarehouse(cfg, pipelineId, ['ods', 'dwd', 'dws']);
  if (!verified.equal) throw new Error(`${part}: the warehouse differs from its source`);
}
