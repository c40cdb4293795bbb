/**
 * The scale-out phase of `npm run bench`: the same work with more worker processes, side by side in one run.
 * A 1,000,000-row snapshot (rows/s until streaming) and a 30-day recompute with 1 and 2 workers, then a steady
 * 5,000 rows/s with 1 and 3 workers (commit -> DWD at the sink's commit). Every part ends with verify against the
 * source. On a 2-core machine the workers and PostgreSQL share the same two cores, so the CPU figures are printed
 * beside the rates: a ratio near 1 is the machine's bound, not the design's.
 */
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
import { slotConflictsInWorkerLogs, workerLogSizes, workerProcesses } from '../src/stack/workers';
import {
  clusterCpuSeconds,
  commitToDwdLatency,
  mustEqualSource,
  offerSteadyLoad,
  processCpuSeconds,
  seconds,
  SPREAD,
  insertSpreadConsumptions,
  insertSpreadUsers,
  waitDaysClosed,
  type Figure,
} from './common';

export type ScaleOutSizes = { users: number; snapshotRows: number; steadySeconds: number };

const RECOMPUTE_CONCURRENCY = 4;

/** CPU of the cluster and of every worker process so far. */
function machineCpuSeconds(cfg: AppConfig): number {
  const workers = workerProcesses(cfg).reduce((s, w) => s + (w.pid ? (processCpuSeconds(w.pid) ?? 0) : 0), 0);
  return clusterCpuSeconds(cfg) + workers;
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
  await insertSpreadUsers(cfg, sizes.users);
  await insertSpreadConsumptions(cfg, 1, sizes.snapshotRows, 100_000, sizes.users);
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
    { pipelineId, from: SPREAD.firstDay, to: SPREAD.lastDay, concurrency: RECOMPUTE_CONCURRENCY },
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
    at: `${SPREAD.lastDay} 12:00:00`,
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
  const logsBefore = workerLogSizes(cfg);
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
      name: `recompute ${SPREAD.days} days (concurrency ${RECOMPUTE_CONCURRENCY}, drift ${runs[1].drift}), 1 worker`,
      ours: runs[1].recomputeS,
      unit: 's',
    },
    {
      name: `recompute ${SPREAD.days} days (concurrency ${RECOMPUTE_CONCURRENCY}, drift ${runs[2].drift}), 2 workers`,
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
      ours: slotConflictsInWorkerLogs(cfg, logsBefore),
      unit: 'errors',
    },
  ];
}
