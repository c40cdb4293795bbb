import { readRowsInOneSnapshot, repairLowWatermark, waitTransactionsEnded } from '../cdc/source-admin';
import type { AppConfig } from '../config';
import { openPool, withClient } from '../db/client';
import { readOdsExtras } from '../sink/ods-columns';
import { SOURCE_TABLES, TABLE, type SourceTable } from '../schema/tables';
import { recomputePartitions } from '../sink/aggregates';
import { readCheckpoint } from '../sink/checkpoint';
import { parsePartitionKey, partitionKey, type Partition } from '../sink/partition';
import { applyRepairWindow, recordRecomputed, type RepairRecord } from '../sink/repair';
import { waitCaughtUp } from './caught-up';

/** Keys per repair window: one source read and one sink transaction (short, since batches wait for it). */
const WINDOW_KEYS = 5000;
const WAIT_MS = 60000;

/** What a verify found, in the terms of the comparison (a verdict's table and its keys or `day/region`). */
export type Found = { table: string; keys: string[] };

/** The source keys to re-read (ODS and DWD differences of a source table) and the DWS partitions to recompute. */
export function repairPlan(found: Found[]): { keys: Record<SourceTable, string[]>; partitions: Partition[] } {
  const keys = { power_user: new Set<string>(), power_consumption: new Set<string>() };
  const partitions: Partition[] = [];
  for (const f of found) {
    const table = SOURCE_TABLES.find((t) => TABLE[t].ods === f.table || TABLE[t].dwd === f.table);
    if (table) for (const k of f.keys) keys[table].add(k);
    else for (const p of f.keys) partitions.push(parsePartitionKey(p));
  }
  return {
    keys: { power_user: [...keys.power_user], power_consumption: [...keys.power_consumption] },
    partitions,
  };
}

/**
 * Repairs what a verify found while the pipeline streams, in windows of keys, each as in DBLog's watermark
 * algorithm: low watermark, source read in one snapshot, high watermark; once the pipeline has applied everything
 * up to the high watermark the read rows are written, except for keys the stream changed since the low watermark
 * (the stream's state wins). Then the DWS partitions found and those whose DWD rows changed are recomputed.
 */
export async function repairDifferences(
  cfg: AppConfig,
  pipelineId: string,
  verifyRunId: string,
  found: Found[],
  progress: (m: string) => void,
): Promise<RepairRecord[]> {
  const plan = repairPlan(found);
  const sink = openPool({ connectionString: cfg.sinkUrl, max: 1 });
  try {
    const records: RepairRecord[] = [];
    const partitions = new Map(plan.partitions.map((p) => [partitionKey(p), p]));
    // Source columns beyond the spec that ODS mirrors (schema evolution): a repair fills them too.
    const extras = await readOdsExtras(sink);
    await withClient(cfg.sourceUrl, async (source) => {
      for (const keys of windows(plan.keys)) {
        const cp = await readCheckpoint(sink, pipelineId);
        if (cp?.phase !== 'streaming')
          throw new Error(
            `pipeline ${pipelineId} is not streaming (${cp?.phase ?? 'no checkpoint'}): cannot repair`,
          );
        const low = await repairLowWatermark(source);
        await waitTransactionsEnded(source, low.xid, WAIT_MS);
        const rows = await readRowsInOneSnapshot(source, keys, {
          power_user: extras.power_user.map((c) => c.name),
          power_consumption: extras.power_consumption.map((c) => c.name),
        });
        // High watermark: a marker after the read. Once the pipeline is past it, every change the read saw is in
        // the sink, and the change log names every key changed since the low watermark.
        if (!(await waitCaughtUp(cfg, pipelineId, WAIT_MS)))
          throw new Error(
            `pipeline ${pipelineId} did not pass the repair's high watermark within ${WAIT_MS / 1000} s (paused?)`,
          );
        const applied = await applyRepairWindow(sink, {
          pipelineId,
          epoch: cp.epoch,
          verifyRunId,
          lowLsn: low.lsn,
          keys,
          source: rows,
          extras,
        });
        records.push(...applied.records);
        for (const p of applied.partitions) partitions.set(partitionKey(p), p);
        progress(
          `repair: ${keys.power_user.length + keys.power_consumption.length} keys re-read, ${applied.records.length} written or skipped`,
        );
      }
    });
    const recompute = [...partitions.values()];
    // Deltas a crash emptied are found here too: their partitions are marked for the next refresh to rebuild.
    await recomputePartitions(sink, recompute, 'repair', (message, fields) =>
      progress(`repair: ${message} ${JSON.stringify(fields)}`),
    );
    records.push(...(await recordRecomputed(sink, { verifyRunId, pipelineId }, recompute)));
    progress(`repair: ${recompute.length} DWS partitions recomputed`);
    return records;
  } finally {
    await sink.end();
  }
}

/** The keys in windows of at most WINDOW_KEYS, users first (details are enriched from them). */
function* windows(keys: Record<SourceTable, string[]>): Generator<Record<SourceTable, string[]>> {
  const queue = SOURCE_TABLES.flatMap((t) => keys[t].map((k) => [t, k] as const));
  for (let i = 0; i < queue.length; i += WINDOW_KEYS) {
    const window: Record<SourceTable, string[]> = { power_user: [], power_consumption: [] };
    for (const [t, k] of queue.slice(i, i + WINDOW_KEYS)) window[t].push(k);
    yield window;
  }
}
