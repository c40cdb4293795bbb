/**
 * `npm run bench [-- --quick] [-- --json]`: measures the pipeline on its own embedded stack and, in the same run,
 * the physical limits it is compared with (pg_recvlogical decoding the same changes, a plain GROUP BY over DWD).
 * Prints a table and writes JSON to bench/results/.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import type pg from 'pg';
import { keepValuesAsText } from '../src/db/client';
import { loadConfig, type AppConfig } from '../src/config';
import {
  recomputeDayWorkflow,
  resetEverything,
  startPipeline,
  temporalClient,
  waitCaughtUp,
  waitStreaming,
} from '../src/control/pipeline';
import { parseLsn, type Change } from '../src/cdc/changes';
import { formatTable } from '../src/cli/output';
import type { TemporalClient } from '../src/cli/shared';
import { withClient } from '../src/db/client';
import { readCheckpoint } from '../src/sink/checkpoint';
import { consumptionStatements } from '../src/sink/dwd';
import { prepareConsumptions } from '../src/sink/writer';
import { boundQuery } from '../src/db/sql';
import { stackDown, stackUp } from '../src/stack';
import { pgBinDir, startPostgres, stopPostgres } from '../src/stack/postgres';
import { readPid } from '../src/stack/proc';
import { verifyWarehouse } from '../src/verify/warehouse';
import {
  commitToDwdLatency,
  commitToDwsLatency,
  burstCursorSampler,
  mustEqualSource,
  offerSteadyLoad,
  insertSpreadConsumptions,
  insertSpreadUsers,
  machineCpu,
  machineFigures,
  NOTHING_DECODED,
  processCpuSeconds,
  sampleDwsCursor,
  seconds,
  sinkSql,
  walFigures,
  walSoFar,
  slotDecoding,
  decodingFigures,
  SPREAD,
  sql,
  waitDaysClosed,
  type Figure,
} from './common';
import { scaleOutFigures } from './scale-out';

const REPO = path.resolve(__dirname, '../..');
const PIPELINE = 'bench';
const SLOT = `stategrid_${PIPELINE}`;

type Sizes = {
  users: number;
  snapshotRows: number;
  streamRows: number;
  txRows: number;
  bigTxRows: number;
  /** Length of the steady 5,000 rows/s load of the scale-out phase. */
  steadySeconds: number;
};
const QUICK: Sizes = {
  steadySeconds: 10,
  users: 2000,
  snapshotRows: 200_000,
  streamRows: 100_000,
  txRows: 1000,
  bigTxRows: 200_000,
};
const FULL: Sizes = {
  steadySeconds: 60,
  users: 20000,
  snapshotRows: 1_000_000,
  streamRows: 500_000,
  txRows: 1000,
  bigTxRows: 1_000_000,
};

async function insertConsumptions(cfg: AppConfig, from: number, to: number, perTx: number, users: number) {
  await withClient(cfg.sourceUrl, async (c) => {
    for (let start = from; start <= to; start += perTx) {
      await c.query(
        `INSERT INTO power_consumption SELECT g, 1 + g % $3::int, (g % 50000) / 100.0, (g % 30000) / 100.0,
           '2026-11-20'::timestamp + make_interval(secs => g % 259200)
         FROM generate_series($1::bigint, $2::bigint) g`,
        [start, Math.min(to, start + perTx - 1), users],
      );
    }
  });
}

/** Changes applied by the pipeline so far, from its checkpoint (a cheap poll, unlike count(*) on ODS). */
async function appliedChanges(cfg: AppConfig): Promise<number> {
  const rows = await sinkSql<{ n: string }>(
    cfg,
    'SELECT changes_applied AS n FROM stategrid_checkpoint WHERE pipeline_id = $1',
    [PIPELINE],
  );
  return Number(rows[0]?.n ?? 0);
}

async function waitApplied(cfg: AppConfig, expected: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await appliedChanges(cfg)) < expected) {
    if (Date.now() > deadline) throw new Error(`pipeline did not apply ${expected} changes`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** pg_recvlogical decoding the same WAL range with the same plugin and publication, written to /dev/null. */
async function recvlogicalSeconds(cfg: AppConfig, slot: string, endLsn: string): Promise<number> {
  const u = new URL(cfg.sourceUrl);
  const t0 = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      path.join(pgBinDir(), 'pg_recvlogical'),
      [
        '-h',
        u.hostname,
        '-p',
        u.port,
        '-U',
        decodeURIComponent(u.username),
        '-d',
        u.pathname.slice(1),
        '-S',
        slot,
        '--start',
        '-E',
        endLsn,
        '-o',
        'proto_version=1',
        '-o',
        'publication_names=stategrid_pub',
        '-f',
        '/dev/null',
        '--no-loop',
      ],
      {
        env: { ...process.env, PGPASSWORD: decodeURIComponent(u.password) },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`pg_recvlogical exit ${code}: ${err}`)),
    );
  });
  return seconds(t0);
}

// The batches both sink-side limits write: 5,000 rows (the default batch size) from this id on, far past the data.
const LIMIT_BATCH_ROWS = 5000;
const LIMIT_FIRST_ID = 2_000_000_000;

/**
 * Seconds `write` took for `rows` rows in batches of LIMIT_BATCH_ROWS, one at a time, each in a transaction that is
 * rolled back so the pipeline's data stays as it is. `setUp` (not timed) gives what the batch from `firstId` needs.
 */
async function rolledBackBatchSeconds<T>(
  cfg: AppConfig,
  rows: number,
  setUp: (firstId: number) => T,
  write: (c: pg.ClientBase, batch: T) => Promise<unknown>,
): Promise<number> {
  let elapsed = 0n;
  await withClient(cfg.sinkUrl, async (c) => {
    for (let b = 0; b < rows / LIMIT_BATCH_ROWS; b++) {
      const batch = setUp(LIMIT_FIRST_ID + b * LIMIT_BATCH_ROWS);
      await c.query('BEGIN');
      const t0 = process.hrtime.bigint();
      await write(c, batch);
      elapsed += process.hrtime.bigint() - t0;
      await c.query('ROLLBACK');
    }
  });
  return Number(elapsed) / 1e9;
}

/**
 * The sink side alone: `rows` consumptions shaped like the streamed ones, prepared and run as the capture runs them
 * (see rolledBackBatchSeconds). Preparing is not timed: the capture does it while the previous batch is written.
 */
function sinkStatementSeconds(cfg: AppConfig, rows: number, users: number): Promise<number> {
  // The form the capture writes such a batch with: new keys, no conflict handling (without the checkpoint's gate,
  // which the rollback would undo anyway).
  const forms = consumptionStatements([]);
  const prepare = (firstId: number) => {
    const changes: Change[] = [];
    for (let i = 0; i < LIMIT_BATCH_ROWS; i++) {
      const g = firstId + i;
      const at = new Date(Date.UTC(2026, 10, 20) + (g % 259200) * 1000).toISOString();
      changes.push({
        kind: 'row',
        table: 'power_consumption',
        op: 'I',
        row: {
          consumption_id: String(g),
          user_id: String(1 + (g % users)),
          consumption_amount: ((g % 50000) / 100).toFixed(2),
          consumption_cost: ((g % 30000) / 100).toFixed(2),
          consumption_date: at.slice(0, 10) + ' ' + at.slice(11, 23),
        },
        txLsn: 0xfff000000n + BigInt(Math.floor(i / 1000)),
        seq: (i % 1000) + 1,
        commitTime: at,
      });
    }
    const prepared = prepareConsumptions(changes);
    if (!prepared) throw new Error('bench batch was not prepared');
    return prepared;
  };
  return rolledBackBatchSeconds(cfg, rows, prepare, (c, prepared) =>
    c.query(boundQuery(prepared.newKeys ? forms.newKeys : forms.plain, prepared.params)),
  );
}

// The rows of one such batch as plain inserts: $1..$2 the ids, $3 the users (values as in sinkStatementSeconds).
const PLAIN_BATCH_ROWS = `
SELECT g AS id, 1 + g % $3::bigint AS user_id, ((g % 50000) / 100.0)::numeric(12,2) AS amount,
  ((g % 30000) / 100.0)::numeric(12,2) AS cost,
  '2026-11-20'::timestamp(3) + make_interval(secs => (g % 259200)::int) AS at
FROM generate_series($1::bigint, $2::bigint) g`;
const PLAIN_INSERTS = [
  `INSERT INTO ods_power_consumption
   SELECT id, user_id, amount, cost, at, 'F/FF000000'::pg_lsn, 'I', now() FROM (${PLAIN_BATCH_ROWS}) r`,
  `INSERT INTO ods_change_log
   SELECT 'F/FF000000'::pg_lsn, (id - $1::bigint + 1)::int, 'power_consumption', 'I',
     jsonb_build_object('consumption_id', id, 'user_id', user_id, 'consumption_amount', amount,
       'consumption_cost', cost, 'consumption_date', at), NULL, now() FROM (${PLAIN_BATCH_ROWS}) r`,
  `INSERT INTO dwd_power_consumption_detail
   SELECT id, user_id, 'user', amount, cost, at, 1, 'region1', 'resident', now() FROM (${PLAIN_BATCH_ROWS}) r`,
];

/**
 * The floor under the sink write: the same rows as plain `INSERT … SELECT`s into ODS, the change log and DWD with
 * their indexes (values generated in the statement, the change log's JSON built there, no user lookup, no DWS
 * deltas, no checkpoint; see rolledBackBatchSeconds). What the three tables of the specification cost to write on
 * this machine, whatever the statement around them.
 */
function plainInsertSeconds(cfg: AppConfig, rows: number, users: number): Promise<number> {
  return rolledBackBatchSeconds(
    cfg,
    rows,
    (firstId) => [firstId, firstId + LIMIT_BATCH_ROWS - 1, users],
    async (c, params) => {
      for (const insert of PLAIN_INSERTS) await c.query(insert, params);
    },
  );
}

type CpuSample = Record<string, Map<number, number>>;

/** CPU used so far by the pipeline's processes: the worker, its walsender and its sink connections. */
async function pipelineCpu(cfg: AppConfig): Promise<CpuSample> {
  const pids = async (query: string) => (await sql<{ pid: number }>(cfg, query)).map((r) => r.pid);
  const sample = (list: number[]) => {
    const m = new Map<number, number>();
    for (const pid of list) {
      const cpu = processCpuSeconds(pid);
      if (cpu !== null) m.set(pid, cpu);
    }
    return m;
  };
  return {
    'worker (node: decode, prepare)': sample([readPid(path.join(cfg.home, 'run', 'worker.pid')) ?? -1]),
    'walsender (decoding)': sample(
      await pids(`SELECT pid FROM pg_stat_replication WHERE application_name = 'stategrid-${PIPELINE}'`),
    ),
    'sink connections (writes, DWS refresh)': sample(
      (
        await sinkSql<{ pid: number }>(
          cfg,
          `SELECT pid FROM pg_stat_activity WHERE application_name = 'stategrid-worker'`,
        )
      ).map((r) => r.pid),
    ),
  };
}

/** CPU seconds per part between two samples; a process that appeared in between counts from zero. */
function cpuSpent(before: CpuSample, after: CpuSample): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [part, procs] of Object.entries(after)) {
    let total = 0;
    for (const [pid, cpu] of procs) total += cpu - (before[part].get(pid) ?? 0);
    out[part] = total;
  }
  return out;
}

function workerPeakRssMb(cfg: AppConfig): number {
  const pid = readPid(path.join(cfg.home, 'run', 'worker.pid'));
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

/**
 * Rows the DWS refresher wrote so far (inserted, updated, deleted) in its tables: per-user day totals and region
 * stats (the ranking is a view of the totals), from the statistics collector. Statistics reach the collector
 * within a second of a commit, so this waits that long first.
 */
async function dwsRowsWritten(cfg: AppConfig): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500));
  const [row] = await sinkSql<{ n: string }>(
    cfg,
    `SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) AS n FROM pg_stat_user_tables
     WHERE relname IN ('dws_user_day_total', 'dws_region_daily_stats')`,
  );
  return Number(row.n);
}

/**
 * Waits until DWS holds the snapshot: no partition left marked for a rebuild, and the DWS cursor (of the
 * checkpoint's epoch, as readCheckpoint gives it) at or past the position the snapshot was taken at (the
 * checkpoint's once streaming begins, with no source change since). The rebuild that takes the marks commits them
 * with the cursor. A wait marker comes through later: the walsender first reads the snapshot's own sink writes,
 * which hold no source change. One connection for the whole wait.
 */
async function waitSnapshotInDws(cfg: AppConfig): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const at = parseLsn((await readCheckpoint(sink, PIPELINE))!.confirmed_lsn);
    const deadline = Date.now() + 600_000;
    for (;;) {
      const cp = (await readCheckpoint(sink, PIPELINE))!;
      const { rows } = await sink.query<{ n: number }>(`SELECT count(*)::int AS n FROM stategrid_dws_dirty`);
      if (rows[0].n === 0 && parseLsn(cp.dws_lsn) >= at) return;
      if (Date.now() > deadline) throw new Error('spread: the snapshot did not reach DWS');
      await new Promise((r) => setTimeout(r, 50));
    }
  });
}

/**
 * The spread scenario of issue 15: users in 10 regions, the snapshot's consumptions over 30 days, the watermark
 * moved to the last day (29 days closed), then `streamRows` more in `txRows`-row transactions over the same 30
 * days: nearly every streamed row is a late correction of a closed (day, region) partition. Reports ODS+DWD and
 * DWS rates and the DWS lag after the last commit, measured like the streaming phase.
 */
async function spreadScenario(
  cfg: AppConfig,
  client: TemporalClient,
  sizes: Sizes,
  say: (m: string) => void,
): Promise<Figure[]> {
  await resetEverything(cfg, client, PIPELINE);
  say(
    `spread: ${sizes.users} users in ${SPREAD.regions} regions, ${sizes.snapshotRows} consumptions over 30 days${SPREAD.everyUserDaily ? ', every user every day' : ''}`,
  );
  await insertSpreadUsers(cfg, sizes.users);
  await insertSpreadConsumptions(cfg, 1, sizes.snapshotRows, 100_000, sizes.users);
  let t0 = process.hrtime.bigint();
  await startPipeline(cfg, client, { pipelineId: PIPELINE, segmentSeconds: 30 });
  await waitStreaming(cfg, PIPELINE, 600_000);
  const streamingS = seconds(t0);
  await waitSnapshotInDws(cfg);
  const snapshotS = seconds(t0);
  if (!(await waitCaughtUp(cfg, PIPELINE, 600_000))) throw new Error('spread: not caught up after snapshot');
  const snapshotMarkerS = seconds(t0);
  // One event on the last day moves the watermark past every earlier day: they close.
  const marker = sizes.snapshotRows + 1;
  await sql(cfg, `INSERT INTO power_consumption VALUES ($1, 1, 1.00, 1.00, $2::timestamp)`, [
    marker,
    `${SPREAD.lastDay} 12:00:00`,
  ]);
  await waitDaysClosed(cfg);
  if (!(await waitCaughtUp(cfg, PIPELINE, 600_000))) throw new Error('spread: not caught up after closing');

  const appliedBefore = await appliedChanges(cfg);
  const cpuBefore = await pipelineCpu(cfg);
  const dwsWritesBefore = await dwsRowsWritten(cfg);
  const walBefore = await walSoFar(cfg);
  const burst = { first: marker + 1, last: marker + sizes.streamRows };
  // The DWS cursor from the first commit on: when DWS held the burst's last commit (not the later wait marker).
  const burstCursor = burstCursorSampler(cfg, PIPELINE);
  const machineBefore = machineCpu();
  t0 = process.hrtime.bigint();
  await insertSpreadConsumptions(cfg, burst.first, burst.last, sizes.txRows, sizes.users);
  const writeS = seconds(t0);
  await waitApplied(cfg, appliedBefore + sizes.streamRows, 600_000);
  const odsS = seconds(t0);
  const machineAfter = machineCpu();
  const cpu = cpuSpent(cpuBefore, await pipelineCpu(cfg));
  const caughtUp = await waitCaughtUp(cfg, PIPELINE, 600_000);
  burstCursor.stop();
  if (!caughtUp) throw new Error('spread: not caught up after streaming');
  const walAfter = await walSoFar(cfg);
  const markerS = seconds(t0);
  const dwsS = await burstCursor.heldAllAfter(burst.first, burst.last);
  const revisions = await sinkSql<{ n: string }>(cfg, `SELECT count(*) AS n FROM dws_revision`);
  const dwsWrites = (await dwsRowsWritten(cfg)) - dwsWritesBefore;
  await mustEqualSource(cfg, PIPELINE, 'spread');

  // 5,000 rows/s offered over the same spread (50-row transactions every 10 ms, nearly all of them late
  // corrections of closed days): how soon DWS holds each row, from the DWS cursor sampled every 100 ms.
  const steadyFirst = marker + sizes.streamRows + 1;
  const steadyS = Math.min(sizes.steadySeconds, 30);
  const offered = offerSteadyLoad(cfg, {
    firstId: steadyFirst,
    rows: 5000 * steadyS,
    users: sizes.users,
    perTx: 50,
    everyMs: 10,
    at: 'spread',
  });
  const cursor = await sampleDwsCursor(
    cfg,
    PIPELINE,
    offered.then(() => waitCaughtUp(cfg, PIPELINE, 300_000)),
  );
  await offered;
  const dwsLatency = await commitToDwsLatency(cfg, steadyFirst, cursor);
  await mustEqualSource(cfg, PIPELINE, 'spread at 5,000 rows/s');
  say(
    `spread: source wrote in ${writeS.toFixed(1)}s, ODS+DWD after ${odsS.toFixed(1)}s, DWS after ${dwsS.toFixed(1)}s`,
  );
  const cpuUs = (Object.values(cpu).reduce((a, b) => a + b, 0) / sizes.streamRows) * 1e6;
  return [
    {
      name: 'spread: snapshot until DWS current',
      ours: (sizes.users + sizes.snapshotRows) / snapshotS,
      unit: 'rows/s',
    },
    // The two parts of it: the chunks loaded (ODS, DWD, the DWD indexes), then DWS current: the rebuild of every
    // marked partition, which the first capture segment's refresher runs while the segment catches up.
    {
      name: 'spread: snapshot until streaming',
      ours: (sizes.users + sizes.snapshotRows) / streamingS,
      unit: 'rows/s',
    },
    { name: 'spread: snapshot, DWS current after streaming', ours: snapshotS - streamingS, unit: 's' },
    {
      name: 'spread: snapshot, caught up with a wait marker after streaming',
      ours: snapshotMarkerS - streamingS,
      unit: 's',
    },
    { name: 'spread: streaming, commit -> ODS+DWD', ours: sizes.streamRows / odsS, unit: 'rows/s' },
    {
      name: `spread: streaming, commit -> DWS current (${revisions[0].n} revisions)`,
      ours: sizes.streamRows / dwsS,
      unit: 'rows/s',
      limit: sizes.streamRows / odsS,
      limitName: 'ODS+DWD of the same run',
      target: '>= 0.9x limit',
    },
    { name: 'spread: the source wrote the burst in', ours: writeS, unit: 's' },
    { name: 'spread: DWS lag after the last commit', ours: dwsS - writeS, unit: 's', target: '< 3 s' },
    { name: 'spread: DWS current after ODS+DWD current', ours: dwsS - odsS, unit: 's' },
    { name: 'spread: caught up with a wait marker after ODS+DWD current', ours: markerS - odsS, unit: 's' },
    {
      name: 'spread: DWS rows written per streamed row (totals, region stats)',
      ours: dwsWrites / sizes.streamRows,
      unit: 'rows',
    },
    { name: 'spread: streaming CPU per row, all processes', ours: cpuUs, unit: 'us' },
    ...walFigures('spread: streaming until caught up,', walBefore, walAfter, sizes.streamRows),
    ...machineFigures('spread: first commit until ODS+DWD current:', machineBefore, machineAfter, {
      seconds: odsS,
      writeSeconds: writeS,
      rows: sizes.streamRows,
      cores: os.cpus().length,
    }),
    ...Object.entries(cpu).map(([part, cpuS]) => ({
      name: `spread: streaming CPU per row: ${part}`,
      ours: (cpuS / sizes.streamRows) * 1e6,
      unit: 'us',
    })),
    {
      name: `spread @5k rows/s for ${steadyS} s: commit -> DWS current p50`,
      ours: dwsLatency.p50,
      unit: 's',
    },
    {
      name: `spread @5k rows/s for ${steadyS} s: commit -> DWS current p99`,
      ours: dwsLatency.p99,
      unit: 's',
      target: '< 2 s',
    },
  ];
}

/** The uniform data's users and snapshot rows, snapshotted until streaming (section 1). */
async function uniformSnapshot(
  cfg: AppConfig,
  client: TemporalClient,
  sizes: Sizes,
  say: (m: string) => void,
): Promise<Figure[]> {
  say(`generating ${sizes.users} users and ${sizes.snapshotRows} consumptions`);
  await sql(
    cfg,
    `INSERT INTO power_user SELECT g, 'user' || g, '居民用电', 1 + g % 8, 'region' || (1 + g % 8), now()
     FROM generate_series(1, $1::int) g`,
    [sizes.users],
  );
  await insertConsumptions(cfg, 1, sizes.snapshotRows, 100_000, sizes.users);
  const input = { pipelineId: PIPELINE, segmentSeconds: 30 };
  const t0 = process.hrtime.bigint();
  await startPipeline(cfg, client, input);
  await waitStreaming(cfg, PIPELINE, 600_000);
  const snapshotS = seconds(t0);
  say(`snapshot: ${((sizes.users + sizes.snapshotRows) / snapshotS) | 0} rows/s`);
  await mustEqualSource(cfg, PIPELINE, 'snapshot');
  // The walsender has read past the snapshot's own writes once a wait marker comes through.
  if (!(await waitCaughtUp(cfg, PIPELINE, 600_000))) throw new Error('not caught up after the snapshot');
  const decoded = await slotDecoding(cfg, SLOT);
  return [
    {
      name: 'initial snapshot',
      ours: (sizes.users + sizes.snapshotRows) / snapshotS,
      unit: 'rows/s',
      target: '>= 100,000 rows/s',
    },
    ...decodingFigures('snapshot until caught up,', NOTHING_DECODED, decoded),
  ];
}

/**
 * What the one-day recompute reads its totals from: live and dead row versions (the statistics collector's
 * count), updates and how many were HOT, the last (auto)vacuum, heap and index size.
 */
async function totalsTableState(cfg: AppConfig): Promise<Record<string, string>> {
  const [row] = await sinkSql<Record<string, string>>(
    cfg,
    `SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count, vacuum_count,
       to_char(last_autovacuum, 'HH24:MI:SS') AS last_autovacuum, to_char(now(), 'HH24:MI:SS') AS now,
       pg_relation_size(relid) AS heap_bytes, pg_indexes_size(relid) AS index_bytes
     FROM pg_stat_user_tables WHERE relname = 'dws_user_day_total'`,
  );
  return row;
}

/**
 * A single large source transaction from consumption `firstId` on (section 4), then the one-day recompute of
 * the largest day against a plain GROUP BY over DWD for the same day (section 5).
 */
async function largeTransactionThenRecompute(
  cfg: AppConfig,
  client: TemporalClient,
  sizes: Sizes,
  bigFirst: number,
  say: (m: string) => void,
): Promise<Figure[]> {
  const figures: Figure[] = [];
  const appliedBeforeBig = await appliedChanges(cfg);
  let t0 = process.hrtime.bigint();
  await insertConsumptions(cfg, bigFirst, bigFirst + sizes.bigTxRows - 1, sizes.bigTxRows, sizes.users);
  await waitApplied(cfg, appliedBeforeBig + sizes.bigTxRows, 900_000);
  const bigS = seconds(t0);
  await mustEqualSource(cfg, PIPELINE, 'large transaction');
  figures.push({
    name: `single ${sizes.bigTxRows}-row transaction applied`,
    ours: sizes.bigTxRows / bigS,
    unit: 'rows/s',
  });
  // 5. One-day recompute against a plain GROUP BY over DWD for the same day: the largest day, which after the
  // large transaction holds close to the 1,000,000 rows of docs/performance.md in full mode. DWS is caught up first, so no
  // refresh competes with either query.
  if (!(await waitCaughtUp(cfg, PIPELINE, 600_000))) throw new Error('not caught up after large transaction');
  const day = (
    await sinkSql<{ d: string }>(
      cfg,
      `SELECT consumption_date::date::text AS d FROM dwd_power_consumption_detail GROUP BY 1 ORDER BY count(*) DESC LIMIT 1`,
    )
  )[0].d;
  const dayRows = Number(
    (
      await sinkSql<{ n: string }>(
        cfg,
        `SELECT count(*) AS n FROM dwd_power_consumption_detail WHERE consumption_date::date = $1`,
        [day],
      )
    )[0].n,
  );
  t0 = process.hrtime.bigint();
  await sinkSql(
    cfg,
    `SELECT region_id, region_name, sum(consumption_amount), sum(consumption_cost), count(DISTINCT user_id),
       max(consumption_amount) FROM dwd_power_consumption_detail WHERE consumption_date::date = $1 GROUP BY 1, 2`,
    [day],
  );
  const groupByS = seconds(t0);
  const totals = await totalsTableState(cfg);
  say(`totals before the recompute: ${JSON.stringify(totals)}`);
  t0 = process.hrtime.bigint();
  const recomputeId = `bench-recompute-${day}-${Date.now()}`;
  const rec = await recomputeDayWorkflow(cfg, client, { date: day, pipelineId: PIPELINE }, recomputeId);
  const recomputeS = seconds(t0);
  figures.push({
    name: `recompute one day (${dayRows} rows, drift ${rec.drift})`,
    ours: recomputeS,
    unit: 's',
    limit: groupByS,
    limitName: 'plain GROUP BY over DWD',
    target: '<= 1.5x limit',
  });
  figures.push({
    name: 'recompute one day: its activity alone (started -> completed in the run history)',
    ours: await activitySeconds(client, recomputeId),
    unit: 's',
    limit: groupByS,
    limitName: 'plain GROUP BY over DWD',
  });
  figures.push({
    name: 'dead row versions in dws_user_day_total before the one-day recompute',
    ours: Number(totals.n_dead_tup),
    unit: 'rows',
  });
  return figures;
}

/**
 * Seconds between the first activity's start and its completion in a workflow run's history (server clock): the
 * part of an end-to-end run that is the activity's own work, without Temporal's task round trips.
 */
async function activitySeconds(client: TemporalClient, workflowId: string): Promise<number> {
  const history = await client.workflow.getHandle(workflowId).fetchHistory();
  type HistoryEvent = NonNullable<typeof history.events>[number];
  const at = (what: string, is: (e: HistoryEvent) => boolean) => {
    const event = history.events?.find(is);
    if (!event?.eventTime) throw new Error(`no activity ${what} in the history of ${workflowId}`);
    return Number(event.eventTime.seconds) + (event.eventTime.nanos ?? 0) / 1e9;
  };
  return (
    at('completion', (e) => !!e.activityTaskCompletedEventAttributes) -
    at('start', (e) => !!e.activityTaskStartedEventAttributes)
  );
}

/** Snapshot, streaming, latency, large transaction, one-day recompute and verify on the uniform data. */
async function uniformFigures(
  cfg: AppConfig,
  client: TemporalClient,
  sizes: Sizes,
  say: (m: string) => void,
): Promise<Figure[]> {
  // 1. Initial snapshot.
  const figures: Figure[] = await uniformSnapshot(cfg, client, sizes, say);
  let t0: bigint;

  // 2. Streaming: small transactions, measured from the first source commit to the sink caught up.
  await sql(cfg, `SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')`);
  const first = sizes.snapshotRows + 1;
  const last = sizes.snapshotRows + sizes.streamRows;
  const appliedBefore = await appliedChanges(cfg);
  const cpuBefore = await pipelineCpu(cfg);
  const walBefore = await walSoFar(cfg);
  const decodedBefore = await slotDecoding(cfg, SLOT);
  const cursor = burstCursorSampler(cfg, PIPELINE);
  const machineBefore = machineCpu();
  t0 = process.hrtime.bigint();
  await insertConsumptions(cfg, first, last, sizes.txRows, sizes.users);
  const writeS = seconds(t0);
  const endLsn = (await sql<{ l: string }>(cfg, 'SELECT pg_current_wal_lsn()::text AS l'))[0].l;
  await waitApplied(cfg, appliedBefore + sizes.streamRows, 600_000);
  const odsS = seconds(t0);
  const machineAfter = machineCpu();
  const cpu = cpuSpent(cpuBefore, await pipelineCpu(cfg));
  const caughtUp = await waitCaughtUp(cfg, PIPELINE, 600_000);
  cursor.stop();
  if (!caughtUp) throw new Error('not caught up after streaming');
  const walAfter = await walSoFar(cfg);
  const decodedAfter = await slotDecoding(cfg, SLOT);
  const markerS = seconds(t0);
  const dwsS = await cursor.heldAllAfter(first, last);
  await mustEqualSource(cfg, PIPELINE, 'streaming');
  const recvS = await recvlogicalSeconds(cfg, 'bench_recv', endLsn);
  await sql(cfg, `SELECT pg_drop_replication_slot('bench_recv')`);
  figures.push({
    name: 'streaming, commit -> ODS+DWD',
    ours: sizes.streamRows / odsS,
    unit: 'rows/s',
    limit: sizes.streamRows / recvS,
    limitName: 'pg_recvlogical decode of the same changes',
    target: '>= 45,000 rows/s and >= 40% of limit',
  });
  const sinkAloneS = await sinkStatementSeconds(cfg, sizes.streamRows, sizes.users);
  figures.push({
    name: 'streaming, commit -> ODS+DWD vs the sink write alone',
    ours: sizes.streamRows / odsS,
    unit: 'rows/s',
    limit: sizes.streamRows / sinkAloneS,
    limitName: 'the same batch statements run alone, one at a time, no decoding',
  });
  figures.push({
    name: 'the sink write alone vs plain inserts of its rows',
    ours: sizes.streamRows / sinkAloneS,
    unit: 'rows/s',
    limit: sizes.streamRows / (await plainInsertSeconds(cfg, sizes.streamRows, sizes.users)),
    limitName: 'INSERT ... SELECT into ODS, change log and DWD with their indexes, one at a time',
  });
  figures.push({
    name: 'streaming, commit -> DWS current',
    ours: sizes.streamRows / dwsS,
    unit: 'rows/s',
    target: '>= 0.9x ODS+DWD',
  });
  // The lag below counts from the last commit: the faster the source wrote the burst, the more of it was left.
  figures.push({ name: 'streaming, the source wrote the burst in', ours: writeS, unit: 's' });
  figures.push({
    name: 'streaming, DWS lag after the last commit',
    ours: dwsS - writeS,
    unit: 's',
    target: '< 3 s',
  });
  figures.push({ name: 'streaming, DWS current after ODS+DWD current', ours: dwsS - odsS, unit: 's' });
  figures.push({
    name: 'streaming, caught up with a wait marker after ODS+DWD current',
    ours: markerS - odsS,
    unit: 's',
  });
  // Where the CPU goes while streaming, per row; the sum bounds what two cores can do with perfect overlap.
  const perRowUs = (cpuS: number) => (cpuS / sizes.streamRows) * 1e6;
  for (const [part, cpuS] of Object.entries(cpu)) {
    figures.push({ name: `streaming CPU per row: ${part}`, ours: perRowUs(cpuS), unit: 'us' });
  }
  const cpuPerRow = Object.values(cpu).reduce((a, b) => a + b, 0) / sizes.streamRows;
  figures.push({
    name: 'streaming ceiling of this machine at that CPU per row',
    ours: os.cpus().length / cpuPerRow,
    unit: 'rows/s',
  });
  // What the walsender had to read and the sink to write: the WAL of the burst until caught up.
  figures.push(...walFigures('streaming until caught up,', walBefore, walAfter, sizes.streamRows));
  figures.push(...decodingFigures('streaming until caught up,', decodedBefore, decodedAfter));
  figures.push(
    ...machineFigures('streaming, first commit until ODS+DWD current:', machineBefore, machineAfter, {
      seconds: odsS,
      writeSeconds: writeS,
      rows: sizes.streamRows,
      cores: os.cpus().length,
    }),
  );
  say(
    `streaming: source wrote in ${writeS.toFixed(1)}s, ODS+DWD after ${odsS.toFixed(1)}s, DWS after ${dwsS.toFixed(1)}s`,
  );

  // 3. Latency at a steady offered rate: 50-row transactions every 10 ms (5,000 rows/s) for 10 s.
  const latFirst = last + 1;
  const latRows = 50_000;
  await offerSteadyLoad(cfg, {
    firstId: latFirst,
    rows: latRows,
    users: sizes.users,
    perTx: 50,
    everyMs: 10,
    at: '2026-11-23 10:00:00',
  });
  if (!(await waitCaughtUp(cfg, PIPELINE, 300_000))) throw new Error('not caught up after latency run');
  const lat = await commitToDwdLatency(cfg, latFirst);
  await mustEqualSource(cfg, PIPELINE, 'latency');
  figures.push({ name: 'latency commit -> DWD commit p50 @5k rows/s', ours: lat.p50, unit: 's' });
  figures.push({ name: 'latency commit -> DWD commit p95 @5k rows/s', ours: lat.p95, unit: 's' });
  figures.push({
    name: 'latency commit -> DWD commit p99 @5k rows/s',
    ours: lat.p99,
    unit: 's',
    target: '< 1 s',
  });

  // 4. and 5. A single large source transaction, then the one-day recompute.
  figures.push(...(await largeTransactionThenRecompute(cfg, client, sizes, latFirst + latRows, say)));

  // 6. Verify of the whole warehouse against its source (ODS and DWD by chunk checksums on both sides, DWS
  // recomputed from DWD), with the pipeline caught up and streaming.
  const consumptions = Number(
    (await sql<{ n: string }>(cfg, 'SELECT count(*) AS n FROM power_consumption'))[0].n,
  );
  t0 = process.hrtime.bigint();
  const verified = await verifyWarehouse(cfg, PIPELINE, ['ods', 'dwd', 'dws']);
  if (!verified.equal) throw new Error('verify: the warehouse differs from its source after the run');
  const verifyS = seconds(t0);
  // The recompute above rewrote the day's DWS: the oracle checks it (and verify's own answer).
  await mustEqualSource(cfg, PIPELINE, 'recompute and verify');
  figures.push({
    name: `verify of the warehouse (${consumptions} consumptions, equal)`,
    ours: verifyS,
    unit: 's',
    target: '< 15 s for 1,000,000 consumptions',
  });

  return figures;
}

async function main(): Promise<void> {
  keepValuesAsText();
  const opts = new Command('bench')
    .option('--quick', 'small sizes, under 2 minutes')
    .option('--json', 'print the JSON result instead of the table')
    .option('--keep-stack', 'leave the bench stack running')
    .option(
      '--spread-only',
      'only the spread scenario (30 days, 10 regions), e.g. to look at DWS on its data',
    )
    .option(
      '--recompute-only',
      'only the snapshot, then the large transaction and the one-day recompute after it (--rounds times)',
    )
    .option('--rounds <n>', 'with --recompute-only: large transactions, each followed by a recompute', '1')
    .option('--sink-db <name>', 'sink in another database of the same cluster (default: the source database)')
    .option(
      '--sink-cluster',
      'sink in a PostgreSQL cluster of its own on this machine (as on another host: the walsender reads only the source WAL)',
    )
    .option(
      '--every-user-daily',
      'spread: every user has rows on every day (600,000 user-day totals in full mode instead of 60,000)',
    )
    .parse(process.argv)
    .opts();
  const sizes = opts.quick ? QUICK : FULL;
  SPREAD.everyUserDaily = !!opts.everyUserDaily;
  // With --json, stdout is the JSON result alone: progress goes to stderr.
  const say = (m: string) => (opts.json ? console.error(m) : console.log(m));
  Object.assign(process.env, {
    STATEGRID_HOME: process.env.STATEGRID_BENCH_HOME ?? path.join(REPO, '.stategrid-bench'),
    // Own ports, so a bench can run beside a developer stack; overridable when several benches share a machine.
    STATEGRID_PG_PORT: process.env.STATEGRID_BENCH_PG_PORT ?? '54349',
    TEMPORAL_ADDRESS: process.env.STATEGRID_BENCH_TEMPORAL_ADDRESS ?? '127.0.0.1:7253',
    STATEGRID_TEMPORAL_UI_PORT: process.env.STATEGRID_BENCH_UI_PORT ?? '8253',
    STATEGRID_METRICS_PORT: '0',
    STATEGRID_LOG_LEVEL: process.env.STATEGRID_LOG_LEVEL ?? 'warn',
  });
  delete process.env.STATEGRID_SOURCE_URL;
  delete process.env.STATEGRID_SINK_URL;
  let cfg = loadConfig();
  if (opts.sinkDb && opts.sinkCluster) throw new Error('--sink-db and --sink-cluster: choose one');
  // The sink's own cluster, started beside the bench stack's and stopped with it.
  const sinkCluster = opts.sinkCluster
    ? loadConfig({
        ...process.env,
        STATEGRID_HOME: path.join(cfg.home, 'sink-cluster'),
        STATEGRID_PG_PORT: process.env.STATEGRID_BENCH_SINK_PG_PORT ?? '54350',
      })
    : undefined;
  if (sinkCluster) {
    say(`sink cluster (${sinkCluster.home}): ${await startPostgres(sinkCluster, say)}`);
    process.env.STATEGRID_SINK_URL = sinkCluster.sourceUrl; // the worker started below inherits it
    process.env.STATEGRID_BENCH_SINK_CLUSTER_HOME = sinkCluster.home; // its CPU counts with the stack's
    cfg = loadConfig();
  }
  if (opts.sinkDb) {
    if (!/^[a-z_][a-z0-9_]*$/.test(opts.sinkDb))
      throw new Error(`--sink-db: not a plain database name: ${opts.sinkDb}`);
    const sinkUrl = new URL(cfg.sourceUrl);
    sinkUrl.pathname = `/${opts.sinkDb}`;
    process.env.STATEGRID_SINK_URL = sinkUrl.toString(); // the worker started below inherits it
    cfg = loadConfig();
  }
  const figures: Figure[] = [];
  say(`stack up (${cfg.home})`);
  await stackUp(cfg, () => undefined, { restartWorker: true });
  const { client, close } = await temporalClient(cfg);
  try {
    await resetEverything(cfg, client, PIPELINE);
    await sql(
      cfg,
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'bench_recv'`,
    );

    if (opts.recomputeOnly) {
      figures.push(...(await uniformSnapshot(cfg, client, sizes, say)));
      for (let round = 0; round < Number(opts.rounds); round++) {
        const first = sizes.snapshotRows + 1 + round * sizes.bigTxRows;
        figures.push(...(await largeTransactionThenRecompute(cfg, client, sizes, first, say)));
      }
    } else if (!opts.spreadOnly) figures.push(...(await uniformFigures(cfg, client, sizes, say)));

    // 7. The same streaming with the changes spread over 30 days and 10 regions, most days closed.
    if (!opts.recomputeOnly) figures.push(...(await spreadScenario(cfg, client, sizes, say)));

    // Worker peak RSS over the whole run.
    figures.push({
      name: 'worker peak RSS (whole run)',
      ours: workerPeakRssMb(cfg),
      unit: 'MB',
      target: '< 300 MB',
    });

    // 7. The same work with more worker processes (restarts the workers; last, after the RSS of the one worker).
    if (!opts.spreadOnly && !opts.recomputeOnly) {
      say('scale-out: 1, 2 and 3 workers');
      figures.push(...(await scaleOutFigures(cfg, client, PIPELINE, sizes, say)));
    }
  } finally {
    await close();
    if (!opts.keepStack) {
      await stackDown(cfg, () => undefined);
      if (sinkCluster) await stopPostgres(sinkCluster);
    }
  }

  const result = {
    mode: `${opts.quick ? 'quick' : 'full'}${opts.spreadOnly ? '-spread' : ''}${opts.recomputeOnly ? '-recompute' : ''}${opts.everyUserDaily ? '-every-user-daily' : ''}`,
    at: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      postgres: execFileSync(path.join(pgBinDir(), 'postgres'), ['--version']).toString().trim(),
    },
    sizes,
    sink: opts.sinkDb
      ? `database ${opts.sinkDb} of the same cluster`
      : sinkCluster
        ? `a cluster of its own on this machine (port ${sinkCluster.pgPort})`
        : 'the source database',
    figures: figures.map((f) => ({ ...f, ratio: f.limit ? f.ours / f.limit : undefined })),
  };
  const dir = path.join(REPO, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${result.mode}-${result.at.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  if (opts.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  // Small figures keep their decimals (0.74 DWS rows per row, 5.5 us per row); counts and rates are rounded.
  const digits = (v: number) => (Number.isInteger(v) || Math.abs(v) >= 100 ? 0 : Math.abs(v) < 10 ? 2 : 1);
  const fmt = (v: number | undefined, unit: string) =>
    v === undefined
      ? ''
      : unit === 's'
        ? v.toFixed(3) + ' s'
        : `${v.toLocaleString('en-US', { maximumFractionDigits: digits(v), minimumFractionDigits: digits(v) })} ${unit}`;
  console.log(
    formatTable(
      result.figures.map((f) => ({
        measure: f.name,
        ours: fmt(f.ours, f.unit),
        limit: f.limitName ? `${fmt(f.limit, f.unit)} (${f.limitName})` : '',
        ratio: f.ratio === undefined ? '' : f.ratio.toFixed(2),
        target: f.target ?? '',
      })),
      [
        { name: 'measure' },
        { name: 'ours', align: 'right' },
        { name: 'limit' },
        { name: 'ratio', align: 'right' },
        { name: 'target' },
      ],
    ),
  );
  console.log(`sink: ${result.sink}`);
  console.log(`results written to ${path.relative(process.cwd(), file)}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  },
);
