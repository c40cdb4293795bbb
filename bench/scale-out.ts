/**
 * The scale-out phase of `npm run bench`: the same work with more worker processes, side by side in one run.
 * A 1,000,000-row snapshot (rows/s until streaming) and a 30-day recompute with 1 and 2 workers, then a steady
 * 5,000 rows/s with 1 and 3 workers (commit -> DWD at the sink's commit). Every part ends with verify against the
 * source. On a 2-core machine the workers and PostgreSQL share the same two cores, so the CPU figures are printed
 * beside the rates: a ratio near 1 is the machine's bound, not the design's.
 */
import fs from 'node:fs';
import type { Client } from '@temporalio/client';
import type { AppConfig } from '../src/config';
import {
  recomputeRangeWorkflowRun,
  resetEverything,
  startPipeline,
  waitCaughtUp,
  waitStreaming,
} from '../src/control/pipeline';
import { stackUp } from '../src/stack';
import { logFile } from '../src/stack/home-files';
import { workerProcesses } from '../src/stack/workers';
import {
  clusterCpuSeconds,
  commitToDwdLatency,
  mustEqualSource,
  offerSteadyLoad,
  processCpuSeconds,
  seconds,
  sinkSql,
  SPREAD_CONSUMPTIONS,
  sql,
  type Figure,
} from './common';

export type ScaleOutSizes = { users: number; snapshotRows: number; steadySeconds: number };

const FIRST_DAY = '2026-10-01';
const DAYS = 30;
const LAST_DAY = '2026-10-30';
const RECOMPUTE_CONCURRENCY = 4;

/** CPU of the cluster and of every worker process so far. */
function machineCpuSeconds(cfg: AppConfig): number {
  const workers = workerProcesses(cfg).reduce((s, w) => s + (w.pid ? (processCpuSeconds(w.pid) ?? 0) : 0), 0);
  return clusterCpuSeconds(cfg) + workers;
}

/** Times the replication slot was found busy (SQLSTATE 55006) in every worker log so far. */
function slotRaces(cfg: AppConfig): number {
  return workerProcesses(cfg).reduce((n, w) => {
    const file = logFile(cfg, w.name);
    return n + (fs.existsSync(file) ? (fs.readFileSync(file, 'utf8').match(/55006/g)?.length ?? 0) : 0);
  }, 0);
}

/** Waits for the watermark to close every day but the last (the recompute should not race the closes). */
async function waitDaysClosed(cfg: AppConfig): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const [{ n }] = await sinkSql<{ n: number }>(
      cfg,
      'SELECT count(*)::int AS n FROM stategrid_window WHERE is_final AND stat_date < $1',
      [LAST_DAY],
    );
    if (n >= DAYS - 1) return;
    if (Date.now() > deadline) throw new Error(`only ${n} of ${DAYS - 1} days closed`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

type SnapshotRun = { rowsPerS: number; cpuUsPerRow: number; recomputeS: number; drift: number };

/** A fresh pipeline over 30 days of data with `workers` processes: snapshot until streaming, then the recompute. */
async function snapshotAndRecompute(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
  sizes: ScaleOutSizes,
): Promise<SnapshotRun> {
  await resetEverything(cfg, client, pipelineId);
  await sql(
    cfg,
    `INSERT INTO power_user SELECT g, 'user' || g, '居民用电', 1 + g % 10, 'region' || (1 + g % 10), now()
     FROM generate_series(1, $1::int) g`,
    [sizes.users],
  );
  for (let from = 1; from <= sizes.snapshotRows; from += 100_000)
    await sql(cfg, SPREAD_CONSUMPTIONS, [
      from,
      Math.min(sizes.snapshotRows, from + 99_999),
      sizes.users,
      FIRST_DAY,
      DAYS,
    ]);
  const rows = sizes.users + sizes.snapshotRows;
  const cpu0 = machineCpuSeconds(cfg);
  let t0 = process.hrtime.bigint();
  await startPipeline(cfg, client, { pipelineId, segmentSeconds: 30 });
  await waitStreaming(cfg, pipelineId, 600_000);
  const snapshotS = seconds(t0);
  const cpuUsPerRow = ((machineCpuSeconds(cfg) - cpu0) / rows) * 1e6;
  await waitDaysClosed(cfg);
  await mustEqualSource(cfg, pipelineId, 'snapshot');
  t0 = process.hrtime.bigint();
  const recomputed = await recomputeRangeWorkflowRun(
    cfg,
    client,
    { pipelineId, from: FIRST_DAY, to: LAST_DAY, concurrency: RECOMPUTE_CONCURRENCY },
    () => undefined,
    'bench-recompute-range',
  );
  if (recomputed.drift) throw new Error(`30-day recompute found drift ${recomputed.drift}`);
  return { rowsPerS: rows / snapshotS, cpuUsPerRow, recomputeS: seconds(t0), drift: recomputed.drift };
}

/** 5,000 rows/s (50-row transactions every 10 ms) on the last, open day; p99 of commit -> DWD. */
async function steadyP99(cfg: AppConfig, pipelineId: string, sizes: ScaleOutSizes, firstId: number) {
  if (!(await waitCaughtUp(cfg, pipelineId, 600_000)))
    throw new Error('not caught up before the steady load');
  const rows = sizes.steadySeconds * 5000;
  await offerSteadyLoad(cfg, {
    firstId,
    rows,
    users: sizes.users,
    perTx: 50,
    everyMs: 10,
    at: `${LAST_DAY} 12:00:00`,
  });
  await mustEqualSource(cfg, pipelineId, 'steady load');
  return { latency: await commitToDwdLatency(cfg, firstId), nextId: firstId + rows };
}

export async function scaleOutFigures(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
  sizes: ScaleOutSizes,
  say: (m: string) => void,
): Promise<Figure[]> {
  const runs: Record<number, SnapshotRun> = {};
  const p99: Record<number, number> = {};
  const racesBefore = slotRaces(cfg);
  let nextId = sizes.snapshotRows + 1;
  for (const workers of [1, 2, 3]) {
    await stackUp(cfg, () => undefined, { restartWorker: true, workers });
    if (workers <= 2) {
      runs[workers] = await snapshotAndRecompute(cfg, client, pipelineId, sizes);
      say(
        `${workers} worker(s): snapshot ${runs[workers].rowsPerS | 0} rows/s, 30-day recompute ${runs[workers].recomputeS.toFixed(1)} s`,
      );
    }
    if (workers !== 2) {
      const steady = await steadyP99(cfg, pipelineId, sizes, nextId);
      nextId = steady.nextId;
      p99[workers] = steady.latency.p99;
      say(`${workers} worker(s): steady 5,000 rows/s, commit -> DWD p99 ${p99[workers].toFixed(3)} s`);
    }
  }
  await stackUp(cfg, () => undefined, { restartWorker: true, workers: 1 });
  const rows = (sizes.users + sizes.snapshotRows).toLocaleString('en-US');
  const vsOne = (v: number) => ({ limit: v, limitName: 'same with 1 worker' });
  return [
    { name: `snapshot of ${rows} rows until streaming, 1 worker`, ours: runs[1].rowsPerS, unit: 'rows/s' },
    {
      name: `snapshot of ${rows} rows until streaming, 2 workers`,
      ours: runs[2].rowsPerS,
      unit: 'rows/s',
      ...vsOne(runs[1].rowsPerS),
    },
    { name: 'snapshot CPU per row (PostgreSQL + workers), 1 worker', ours: runs[1].cpuUsPerRow, unit: 'us' },
    {
      name: 'snapshot CPU per row (PostgreSQL + workers), 2 workers',
      ours: runs[2].cpuUsPerRow,
      unit: 'us',
      ...vsOne(runs[1].cpuUsPerRow),
    },
    {
      name: `recompute ${DAYS} days (concurrency ${RECOMPUTE_CONCURRENCY}, drift ${runs[1].drift}), 1 worker`,
      ours: runs[1].recomputeS,
      unit: 's',
    },
    {
      name: `recompute ${DAYS} days (concurrency ${RECOMPUTE_CONCURRENCY}, drift ${runs[2].drift}), 2 workers`,
      ours: runs[2].recomputeS,
      unit: 's',
      ...vsOne(runs[1].recomputeS),
    },
    { name: 'latency commit -> DWD commit p99 @5k rows/s steady, 1 worker', ours: p99[1], unit: 's' },
    {
      name: 'latency commit -> DWD commit p99 @5k rows/s steady, 3 workers',
      ours: p99[3],
      unit: 's',
      ...vsOne(p99[1]),
      target: '<= 1.5x 1 worker',
    },
    {
      name: 'replication slot busy (55006) in worker logs',
      ours: slotRaces(cfg) - racesBefore,
      unit: 'errors',
    },
  ];
}
