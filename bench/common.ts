/** What the bench's phases share: queries, timing, CPU sampling and the steady load with its latency. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseLsn } from '../src/cdc/changes';
import { slotFigures, type SlotFigures } from '../src/cdc/source-admin';
import type { AppConfig } from '../src/config';
import { waitCaughtUp } from '../src/control/pipeline';
import { openPool, withClient } from '../src/db/client';
import { childPids, procStatFields } from '../src/stack/proc';
import { verifyWarehouse } from '../src/verify/warehouse';
import { oracleLayers, type OracleInputs } from '../test/integration/helpers/oracle';
import { CHANGE_LOG_AS_STREAMED, OracleCompare } from '../test/integration/helpers/oracle-compare';

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

/** CPU seconds (user + system) in stat fields, with the reaped children's when asked. */
function cpuOf(fields: string[], withReapedChildren = false): number {
  const own = Number(fields[11]) + Number(fields[12]);
  const reaped = withReapedChildren ? Number(fields[13]) + Number(fields[14]) : 0;
  return (own + reaped) / CLOCK_TICKS;
}

/** CPU seconds (user + system) a process has used so far, or null once it is gone. */
export function processCpuSeconds(pid: number, withReapedChildren = false): number | null {
  const fields = procStatFields(pid);
  return fields ? cpuOf(fields, withReapedChildren) : null;
}

/** The whole machine's CPU seconds so far (/proc/stat, every core): busy (not idle, I/O wait or stolen) and stolen. */
export type MachineCpu = { busy: number; steal: number };

export function machineCpu(): MachineCpu {
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
  const [user, nice, system, , , irq, softirq, steal] = fs
    .readFileSync('/proc/stat', 'utf8')
    .split('\n')[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return { busy: (user + nice + system + irq + softirq) / CLOCK_TICKS, steal: steal / CLOCK_TICKS };
}

/**
 * The whole machine over a burst, from its first commit until ODS+DWD held it (`seconds`): how busy its cores
 * were, its CPU per streamed row (every process: the source's writer, Temporal and the rest too), and the ODS+DWD
 * lag that CPU allows at best: all cores busy from the first commit, less the time the source took to write.
 */
export function machineFigures(
  label: string,
  before: MachineCpu,
  after: MachineCpu,
  run: { seconds: number; writeSeconds: number; rows: number; cores: number },
): Figure[] {
  const busy = after.busy - before.busy;
  return [
    {
      name: `${label} cores busy (/proc/stat)`,
      ours: (busy / (run.seconds * run.cores)) * 100,
      unit: '%',
    },
    {
      name: `${label} cores stolen by the hypervisor`,
      ours: ((after.steal - before.steal) / (run.seconds * run.cores)) * 100,
      unit: '%',
    },
    { name: `${label} machine CPU per row, every process`, ours: (busy / run.rows) * 1e6, unit: 'us' },
    {
      name: `${label} ODS+DWD lag after the last commit, floor at that CPU (every core busy)`,
      ours: Math.max(0, busy / run.cores - run.writeSeconds),
      unit: 's',
    },
  ];
}

/**
 * CPU seconds used so far by the embedded PostgreSQL clusters (the stack's, and with `--sink-cluster` the sink's,
 * whose home run.ts passes in STATEGRID_BENCH_SINK_CLUSTER_HOME): each postmaster, every live backend and every
 * backend that has ended (the postmaster reaps them, so their time is in its children's counters). Short-lived
 * connections, like a snapshot chunk's source reader, count too.
 */
export function clusterCpuSeconds(cfg: AppConfig): number {
  const homes = [cfg.home, process.env.STATEGRID_BENCH_SINK_CLUSTER_HOME].filter((h): h is string => !!h);
  const postmasters = homes.map((home) =>
    Number(fs.readFileSync(path.join(home, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]),
  );
  let total = 0;
  for (const postmaster of postmasters) {
    total += processCpuSeconds(postmaster, true) ?? 0;
    // null: the backend ended between the listing and the read
    for (const backend of childPids(postmaster)) total += processCpuSeconds(backend) ?? 0;
  }
  return total;
}

/** WAL written so far (records, full-page images, bytes) and checkpoints begun, summed over the bench's clusters. */
export type WalSample = { records: number; fullPages: number; bytes: number; checkpoints: number };

const WAL_SO_FAR = `SELECT w.wal_records::float8 AS records, w.wal_fpi::float8 AS "fullPages", w.wal_bytes::float8 AS bytes,
  (b.checkpoints_timed + b.checkpoints_req)::float8 AS checkpoints FROM pg_stat_wal w, pg_stat_bgwriter b`;

/**
 * What every writer of the stack's cluster (the source's writer, the sink, the refresher) and, with
 * `--sink-cluster`, of the sink's cluster has put in the WAL so far. The walsender reads all of its cluster's WAL,
 * so this is also what decoding had to read.
 */
export async function walSoFar(cfg: AppConfig): Promise<WalSample> {
  const samples = [(await sql<WalSample>(cfg, WAL_SO_FAR))[0]];
  if (process.env.STATEGRID_BENCH_SINK_CLUSTER_HOME)
    samples.push((await sinkSql<WalSample>(cfg, WAL_SO_FAR))[0]);
  const sum = (k: keyof WalSample) => samples.reduce((a, s) => a + Number(s[k]), 0);
  return {
    records: sum('records'),
    fullPages: sum('fullPages'),
    bytes: sum('bytes'),
    checkpoints: sum('checkpoints'),
  };
}

/** Figures for the WAL written between two samples, per streamed row; `phase` prefixes their names. */
export function walFigures(phase: string, before: WalSample, after: WalSample, rows: number): Figure[] {
  const per = (k: keyof WalSample) => (after[k] - before[k]) / rows;
  return [
    { name: `${phase} WAL per row, all writers`, ours: per('bytes'), unit: 'bytes' },
    { name: `${phase} WAL records per row`, ours: per('records'), unit: 'records' },
    { name: `${phase} WAL full-page images per row`, ours: per('fullPages'), unit: 'images' },
    { name: `${phase} checkpoints begun`, ours: after.checkpoints - before.checkpoints, unit: '' },
  ];
}

/** What a slot's walsenders decoded so far, and spilled to disk (the product's slot figures). */
export type SlotDecoding = NonNullable<SlotFigures['decoded']>;

/** Nothing decoded: a slot PostgreSQL has no statistics for yet, or the start of a new slot. */
export const NOTHING_DECODED: SlotDecoding = {
  transactions: 0,
  bytes: 0,
  spilledTransactions: 0,
  spilledBytes: 0,
};

export async function slotDecoding(cfg: AppConfig, slot: string): Promise<SlotDecoding> {
  return (await slotFigures(cfg.sourceUrl, slot)).decoded ?? NOTHING_DECODED;
}

/**
 * Figures for what the walsender decoded between two samples: transactions (with the sink in the source
 * database, the sink's own count too: decoding reads every transaction of its database before the publication
 * drops the sink's rows) and the share spilled to disk (a transaction's changes past logical_decoding_work_mem).
 */
export function decodingFigures(phase: string, before: SlotDecoding, after: SlotDecoding): Figure[] {
  const mb = (k: keyof SlotDecoding) => (after[k] - before[k]) / 1e6;
  return [
    { name: `${phase} transactions decoded`, ours: after.transactions - before.transactions, unit: '' },
    { name: `${phase} changes decoded`, ours: mb('bytes'), unit: 'MB' },
    {
      name: `${phase} transactions spilled to disk`,
      ours: after.spilledTransactions - before.spilledTransactions,
      unit: '',
    },
    { name: `${phase} changes spilled to disk`, ours: mb('spilledBytes'), unit: 'MB' },
  ];
}

/**
 * The spread of issue 15, shared by the spread scenario and the scale-out parts: users in SPREAD.regions regions,
 * consumptions over SPREAD.days days from SPREAD.firstDay. `everyUserDaily` (bench option) gives every user rows on
 * every day (600,000 per-user day totals for 20,000 users) instead of three days each (60,000).
 */
export const SPREAD = {
  firstDay: '2026-10-01',
  lastDay: '2026-10-30',
  days: 30,
  regions: 10,
  everyUserDaily: false,
};

/** Users 1..`users`, user g in region 1 + g % SPREAD.regions. */
export async function insertSpreadUsers(cfg: AppConfig, users: number): Promise<void> {
  await sql(
    cfg,
    `INSERT INTO power_user SELECT g, 'user' || g, '居民用电', 1 + g % $2::int, 'region' || (1 + g % $2::int), now()
     FROM generate_series(1, $1::int) g`,
    [users, SPREAD.regions],
  );
}

// Consumptions $1..$2 of users 1..$3 over $5 days from $4, every $6 ids (one per region) on the next day. The user
// is 1 + (g + $7 * (g / ($6 * $5))) % $3: with $7 = 0 the user follows g, so a day sees a tenth of the users; with
// $7 = $6 each round of the days moves every (day, region) on by $6 users of the same region, reaching all of them.
const SPREAD_INSERT = `INSERT INTO power_consumption
  SELECT g, 1 + (g + $7::int * (g / ($6::int * $5::int))) % $3::int, (g % 50000) / 100.0, (g % 30000) / 100.0,
    $4::timestamp + make_interval(days => ((g / $6::int) % $5::int)::int, secs => (g / 3000) % 86000)
  FROM generate_series($1::bigint, $2::bigint) g`;

/** The parameters of SPREAD_INSERT after the id range and the users. */
const spreadParams = () => [
  SPREAD.firstDay,
  SPREAD.days,
  SPREAD.regions,
  SPREAD.everyUserDaily ? SPREAD.regions : 0,
];

/**
 * Inserts consumptions [from, to] in `perTx`-row transactions, spread evenly over the days and, within a day, over
 * all regions (consumption g belongs to user 1 + g % users, so its region follows g; the day changes every
 * SPREAD.regions ids, so every transaction touches every (day, region) partition).
 */
export async function insertSpreadConsumptions(
  cfg: AppConfig,
  from: number,
  to: number,
  perTx: number,
  users: number,
): Promise<void> {
  await withClient(cfg.sourceUrl, async (c) => {
    for (let start = from; start <= to; start += perTx)
      await c.query(SPREAD_INSERT, [start, Math.min(to, start + perTx - 1), users, ...spreadParams()]);
  });
}

/** Waits until every spread day but the last is final (a recompute or a burst should not race the closes). */
export async function waitDaysClosed(cfg: AppConfig): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const [{ n }] = await sinkSql<{ n: number }>(
      cfg,
      'SELECT count(*)::int AS n FROM stategrid_window WHERE is_final AND stat_date < $1',
      [SPREAD.lastDay],
    );
    if (n >= SPREAD.days - 1) return;
    if (Date.now() > deadline) throw new Error(`only ${n} of ${SPREAD.days - 1} days closed`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export type SteadyLoad = {
  firstId: number;
  rows: number;
  users: number;
  /** Rows per source transaction; one transaction every `everyMs`. */
  perTx: number;
  everyMs: number;
  /** The day the rows fall on (an open day, so no late-event path is measured), or the whole spread's days. */
  at: string | 'spread';
};

/** Offers the load at its rate: each transaction at its due time, whatever the previous one took. */
export async function offerSteadyLoad(cfg: AppConfig, load: SteadyLoad): Promise<void> {
  await withClient(cfg.sourceUrl, async (c) => {
    const start = Date.now();
    for (let i = 0; i < load.rows / load.perTx; i++) {
      const wait = start + i * load.everyMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const a = load.firstId + i * load.perTx;
      const range = [a, a + load.perTx - 1, load.users];
      if (load.at === 'spread') await c.query(SPREAD_INSERT, [...range, ...spreadParams()]);
      else
        await c.query(
          `INSERT INTO power_consumption SELECT g, 1 + g % $3::int, 1.00, 0.50, $4::timestamp
           FROM generate_series($1::bigint, $2::bigint) g`,
          [...range, load.at],
        );
    }
  });
}

export type Latency = { p50: number; p95: number; p99: number; rows: number };

const latencyOf = (delays: number[]): Latency => ({
  p50: percentile(delays, 0.5),
  p95: percentile(delays, 0.95),
  p99: percentile(delays, 0.99),
  rows: delays.length,
});

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
  return latencyOf(delays);
}

/**
 * Polls the pipeline's DWS cursor (dws_lsn: DWS holds every change up to it) every 100 ms until `stop` resolves:
 * when each position was first seen, to tell when each source commit reached DWS.
 */
export async function sampleDwsCursor(
  cfg: AppConfig,
  pipelineId: string,
  stop: Promise<unknown>,
): Promise<{ at: number; lsn: string }[]> {
  const samples: { at: number; lsn: string }[] = [];
  let done = false;
  void stop.finally(() => (done = true));
  await withClient(cfg.sinkUrl, async (c) => {
    // One more sample after `stop`: the cursor's last move (what made the pipeline caught up) is always seen.
    for (;;) {
      const last = done;
      const { rows } = await c.query<{ lsn: string; at: string }>(
        `SELECT dws_lsn::text AS lsn, extract(epoch FROM clock_timestamp())::text AS at FROM stategrid_dws_cursor
         WHERE pipeline_id = $1`,
        [pipelineId],
      );
      if (rows[0] && samples[samples.length - 1]?.lsn !== rows[0].lsn)
        samples.push({ at: Number(rows[0].at), lsn: rows[0].lsn });
      if (last) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  return samples;
}

/**
 * The first DWS cursor sample past a commit: the cursor is the end of the last transaction DWS holds, so it is
 * past a commit's LSN once DWS holds that commit (at the LSN itself it may still be the transaction before).
 */
function firstSamplePast(cursor: { at: number; lsn: bigint }[], commitLsn: string): { at: number } {
  const lsn = parseLsn(commitLsn);
  const seen = cursor.find((s) => s.lsn > lsn);
  if (!seen) throw new Error(`commit ${commitLsn} not in DWS by the last cursor sample`);
  return seen;
}

/** Cursor samples with their positions parsed once, for firstSamplePast. */
const parsedCursor = (samples: { at: number; lsn: string }[]) =>
  samples.map((s) => ({ at: s.at, lsn: parseLsn(s.lsn) }));

/**
 * When DWS first held every consumption from `firstId` to `lastId`, in seconds after `startedAtMs` (epoch ms): the
 * first DWS cursor sample past the last source commit among them (ODS keeps each row's commit LSN in _lsn). The
 * samples are the sink's clock, `startedAtMs` the bench's: the bench runs on the sink's host.
 */
async function dwsHeldAllAfter(
  cfg: AppConfig,
  firstId: number,
  lastId: number,
  samples: { at: number; lsn: string }[],
  startedAtMs: number,
): Promise<number> {
  const [{ lsn }] = await sinkSql<{ lsn: string }>(
    cfg,
    `SELECT max(_lsn)::text AS lsn FROM ods_power_consumption WHERE consumption_id BETWEEN $1 AND $2`,
    [firstId, lastId],
  );
  return firstSamplePast(parsedCursor(samples), lsn).at - startedAtMs / 1000;
}

/**
 * The DWS cursor sampled from now on, for a burst: once `stop` was called, `heldAllAfter` tells when DWS first held
 * the consumptions `firstId` to `lastId` (see dwsHeldAllAfter), in seconds after sampling began.
 */
export function burstCursorSampler(cfg: AppConfig, pipelineId: string) {
  let stop = () => {};
  const samples = sampleDwsCursor(cfg, pipelineId, new Promise<void>((r) => (stop = r)));
  const startedAtMs = Date.now();
  return {
    stop: () => stop(),
    heldAllAfter: async (firstId: number, lastId: number) =>
      dwsHeldAllAfter(cfg, firstId, lastId, await samples, startedAtMs),
  };
}

/**
 * Commit -> DWS current of each consumption from `firstId` on: its source commit time and LSN (as the change log
 * recorded them) against the first cursor sample past that LSN (see firstSamplePast; resolution 100 ms, the
 * sampling period).
 */
export async function commitToDwsLatency(
  cfg: AppConfig,
  firstId: number,
  samples: { at: number; lsn: string }[],
): Promise<Latency> {
  const commits = await sinkSql<{ lsn: string; t: string; n: number }>(
    cfg,
    `SELECT commit_lsn::text AS lsn, extract(epoch FROM commit_time)::text AS t, count(*)::int AS n
     FROM ods_change_log WHERE table_name = 'power_consumption' AND op = 'I'
       AND (row_data->>'consumption_id')::bigint >= $1 GROUP BY 1, 2`,
    [firstId],
  );
  const cursor = parsedCursor(samples);
  const delays: number[] = [];
  for (const c of commits) {
    const seen = firstSamplePast(cursor, c.lsn);
    for (let i = 0; i < c.n; i++) delays.push(seen.at - Number(c.t));
  }
  if (!delays.length) throw new Error('no streamed rows to measure');
  return latencyOf(delays);
}

/**
 * The test oracle (test/integration/helpers/oracle.ts: the documented semantics written directly against the
 * source) over the bench's pipeline, which runs with the default plugin and window rules. With the sink in the
 * source database every layer is compared row for row, is_final, windows, dead letters and ODS metadata included;
 * with the sink elsewhere, ODS, DWD and DWS (without is_final) by row count and a hash of every row on each side.
 * Returns the layers that differ.
 */
async function oracleDifferences(cfg: AppConfig): Promise<string[]> {
  const o: OracleInputs = {
    streamed: CHANGE_LOG_AS_STREAMED,
    rules: { timeZone: cfg.timeZone, closeGraceMinutes: 30, allowedLatenessMinutes: 10 },
    nanArrivesAsNull: cfg.decodingPlugin === 'wal2json',
  };
  if (cfg.sinkUrl === cfg.sourceUrl) {
    const db = openPool({ connectionString: cfg.sourceUrl, max: 1 });
    try {
      const layers = await new OracleCompare(db).everyLayer(o);
      return layers
        .filter((l) => l.missing || l.extra)
        .map((l) => `${l.layer} (${l.missing} missing, ${l.extra} extra)`);
    } finally {
      await db.end();
    }
  }
  const digest = (query: string) =>
    `SELECT count(*)::text || ':' || coalesce(sum(hashtextextended((x.*)::text, 0)), 0)::text AS d FROM (${query}) x`;
  const differing: string[] = [];
  for (const l of oracleLayers(null)) {
    const [expected] = await sql<{ d: string }>(cfg, digest(l.expected));
    const [actual] = await sinkSql<{ d: string }>(cfg, digest(l.actual));
    if (expected.d !== actual.d) differing.push(l.name);
  }
  return differing;
}

/**
 * Ends a part: the warehouse must equal its source, by the product's verify and by the test oracle, or the run
 * fails instead of reporting a figure.
 */
export async function mustEqualSource(cfg: AppConfig, pipelineId: string, part: string): Promise<void> {
  if (!(await waitCaughtUp(cfg, pipelineId, 600_000))) throw new Error(`${part}: not caught up`);
  const verified = await verifyWarehouse(cfg, pipelineId, ['ods', 'dwd', 'dws']);
  if (!verified.equal) throw new Error(`${part}: the warehouse differs from its source (verify)`);
  const differing = await oracleDifferences(cfg);
  if (differing.length)
    throw new Error(`${part}: the warehouse differs from the oracle: ${differing.join('; ')}`);
}
