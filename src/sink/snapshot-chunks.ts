/**
 * The plan of a fanned-out snapshot in `stategrid_snapshot_chunk`: written once by the activity holding the
 * exported snapshot, read by the chunk activities on any worker, each chunk marked done in its load transaction.
 */
import type pg from 'pg';
import type { LoadedChunk, PlannedChunkRef } from '../cdc/ports';
import type { SourceTable } from '../schema/tables';

export type PlannedChunk = {
  chunkNo: number;
  table: SourceTable;
  afterKey: string | null;
  upToKey: string | null;
  columns: string[];
};

/** What every chunk of one snapshot shares. */
export type SnapshotPlan = {
  pipelineId: string;
  snapshotId: string;
  epoch: string;
  snapshotName: string;
  snapshotLsn: string;
  chunks: PlannedChunk[];
};

/** Replaces the pipeline's plan by this one (plans of earlier snapshots are of no use any more). */
export async function writePlan(db: pg.ClientBase | pg.Pool, plan: SnapshotPlan): Promise<void> {
  await db.query('DELETE FROM stategrid_snapshot_chunk WHERE pipeline_id = $1', [plan.pipelineId]);
  await db.query(
    `INSERT INTO stategrid_snapshot_chunk (pipeline_id, snapshot_id, chunk_no, epoch, table_name, after_key,
       up_to_key, columns, snapshot_name, snapshot_lsn)
     SELECT $1, $2, c.chunk_no, $3::bigint, c.table_name, c.after_key, c.up_to_key,
       ARRAY(SELECT jsonb_array_elements_text(c.columns)), $4, $5::pg_lsn
     FROM jsonb_to_recordset($6::jsonb) AS c(chunk_no int, table_name text, after_key bigint, up_to_key bigint,
       columns jsonb)`,
    [
      plan.pipelineId,
      plan.snapshotId,
      plan.epoch,
      plan.snapshotName,
      plan.snapshotLsn,
      JSON.stringify(
        plan.chunks.map((c) => ({
          chunk_no: c.chunkNo,
          table_name: c.table,
          after_key: c.afterKey,
          up_to_key: c.upToKey,
          columns: c.columns,
        })),
      ),
    ],
  );
}

/** The plan, once its holder has written it (null before). */
export async function readPlan(
  db: pg.ClientBase | pg.Pool,
  pipelineId: string,
  snapshotId: string,
): Promise<SnapshotPlan | null> {
  const { rows } = await db.query(
    `SELECT chunk_no, epoch::text, table_name, after_key::text, up_to_key::text, columns, snapshot_name,
       snapshot_lsn::text FROM stategrid_snapshot_chunk WHERE pipeline_id = $1 AND snapshot_id = $2 ORDER BY chunk_no`,
    [pipelineId, snapshotId],
  );
  if (!rows.length) return null;
  return {
    pipelineId,
    snapshotId,
    epoch: rows[0].epoch,
    snapshotName: rows[0].snapshot_name,
    snapshotLsn: rows[0].snapshot_lsn,
    chunks: rows.map((r) => ({
      chunkNo: r.chunk_no,
      table: r.table_name,
      afterKey: r.after_key,
      upToKey: r.up_to_key,
      columns: r.columns,
    })),
  };
}

/** Counts a start of the chunk by this worker (committed at once); true when an earlier attempt already loaded it. */
export async function startChunk(
  db: pg.Pool,
  plan: Pick<SnapshotPlan, 'pipelineId' | 'snapshotId'>,
  chunkNo: number,
  worker: string,
): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE stategrid_snapshot_chunk SET attempts = attempts + CASE WHEN done_at IS NULL THEN 1 ELSE 0 END,
       loaded_by = CASE WHEN done_at IS NULL THEN $4 ELSE loaded_by END
     WHERE pipeline_id = $1 AND snapshot_id = $2 AND chunk_no = $3
     RETURNING done_at IS NOT NULL AS done`,
    [plan.pipelineId, plan.snapshotId, chunkNo, worker],
  );
  if (!rows.length) throw new Error(`snapshot ${plan.snapshotId} has no chunk ${chunkNo}`);
  return rows[0].done as boolean;
}

/**
 * First in a chunk's load transaction: locks its plan row (a second attempt of the same chunk waits here) and tells
 * whether it still needs loading.
 */
export async function claimChunk(
  client: pg.ClientBase,
  pipelineId: string,
  c: PlannedChunkRef,
): Promise<boolean> {
  const { rows } = await client.query(
    `SELECT done_at IS NULL AS open FROM stategrid_snapshot_chunk
     WHERE pipeline_id = $1 AND snapshot_id = $2 AND chunk_no = $3 FOR UPDATE`,
    [pipelineId, c.snapshotId, c.chunkNo],
  );
  if (!rows.length) throw new Error(`snapshot ${c.snapshotId} has no chunk ${c.chunkNo}`);
  return rows[0].open as boolean;
}

/** Last in the chunk's load transaction: marks it done with what it loaded. */
export async function chunkLoaded(
  client: pg.ClientBase,
  pipelineId: string,
  c: PlannedChunkRef,
  loaded: LoadedChunk,
): Promise<void> {
  await client.query(
    `UPDATE stategrid_snapshot_chunk SET rows = $4, dead_letters = $5, days = $6, max_event_time = $7, done_at = now()
     WHERE pipeline_id = $1 AND snapshot_id = $2 AND chunk_no = $3`,
    [pipelineId, c.snapshotId, c.chunkNo, loaded.rows, loaded.deadLetters, loaded.days, loaded.maxEventTime],
  );
}

export type ChunkTotals = {
  chunks: number;
  done: number;
  rows: Record<string, number>;
  maxEventTime: string | null;
  days: string[];
  /** From the plan to the last chunk loaded. */
  seconds: number;
};

export async function chunkTotals(
  db: pg.ClientBase | pg.Pool,
  pipelineId: string,
  snapshotId: string,
): Promise<ChunkTotals> {
  const { rows } = await db.query(
    `SELECT table_name, count(*)::int AS chunks, count(done_at)::int AS done, COALESCE(sum(rows), 0)::bigint::text AS rows,
       max(max_event_time) AS max_event_time,
       extract(epoch FROM max(done_at) - min(planned_at))::float8 AS seconds,
       ARRAY(SELECT DISTINCT d FROM stategrid_snapshot_chunk c2, unnest(c2.days) d
         WHERE c2.pipeline_id = $1 AND c2.snapshot_id = $2 ORDER BY d) AS days
     FROM stategrid_snapshot_chunk WHERE pipeline_id = $1 AND snapshot_id = $2 GROUP BY table_name`,
    [pipelineId, snapshotId],
  );
  const totals: ChunkTotals = { chunks: 0, done: 0, rows: {}, maxEventTime: null, days: [], seconds: 0 };
  for (const r of rows) {
    totals.chunks += r.chunks;
    totals.done += r.done;
    totals.rows[r.table_name] = Number(r.rows);
    if (r.max_event_time && (!totals.maxEventTime || r.max_event_time > totals.maxEventTime))
      totals.maxEventTime = r.max_event_time;
    totals.days = r.days;
    totals.seconds = Math.max(totals.seconds, r.seconds ?? 0);
  }
  return totals;
}
