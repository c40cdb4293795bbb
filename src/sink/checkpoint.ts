/**
 * The checkpoint row, single source of truth for resume: one row per pipeline with its phase, epoch (bumped by
 * every snapshot, fencing off stale captures), the last applied change (commit_lsn, seq), the slot position
 * confirmed and counters; the DWS cursor (dws_lsn) lives in a row of its own, read with it. Every read and write of
 * them is here.
 */
import type pg from 'pg';
import { boundQuery, named } from '../db/sql';

export type CheckpointRow = {
  pipeline_id: string;
  slot_name: string;
  phase: string;
  epoch: string;
  commit_lsn: string;
  seq: number;
  confirmed_lsn: string;
  dws_lsn: string;
  snapshot_rows: string;
  changes_applied: string;
  max_event_time: string | null;
  updated_at: string;
};

type Db = pg.ClientBase | pg.Pool;

// The DWS cursor of the checkpoint's epoch (a cursor left from an earlier epoch reads as 0/0).
const SELECT_CHECKPOINT = `
SELECT c.pipeline_id, slot_name, phase, c.epoch::text, commit_lsn::text, seq, confirmed_lsn::text,
  COALESCE(d.dws_lsn, '0/0')::text AS dws_lsn, snapshot_rows, changes_applied, max_event_time::text, updated_at::text
FROM stategrid_checkpoint c
LEFT JOIN stategrid_dws_cursor d ON d.pipeline_id = c.pipeline_id AND d.epoch = c.epoch
WHERE c.pipeline_id = $1`;

export async function readCheckpoint(db: Db, pipelineId: string): Promise<CheckpointRow | null> {
  const { rows } = await db.query<CheckpointRow>(SELECT_CHECKPOINT, [pipelineId]);
  return rows[0] ?? null;
}

/** Reads and locks the row until the end of the caller's transaction: batches and snapshots serialize on it. */
export async function lockCheckpoint(client: pg.ClientBase, pipelineId: string): Promise<CheckpointRow> {
  const { rows } = await client.query<CheckpointRow>(`${SELECT_CHECKPOINT} FOR UPDATE OF c`, [pipelineId]);
  if (!rows.length) throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
  return rows[0];
}

export async function ensureCheckpoint(db: Db, pipelineId: string, slotName: string): Promise<CheckpointRow> {
  await db.query(
    `INSERT INTO stategrid_checkpoint (pipeline_id, slot_name) VALUES ($1, $2) ON CONFLICT (pipeline_id) DO NOTHING`,
    [pipelineId, slotName],
  );
  return (await readCheckpoint(db, pipelineId))!;
}

export type AdvanceParam =
  'pipeline_id' | 'commit_lsn' | 'seq' | 'confirmed_lsn' | 'changes' | 'max_event_time';

/**
 * The checkpoint after a batch: last change applied, confirmed slot position (null keeps it), changes applied and
 * the largest event time. One text for the batch transaction and the one-statement batch, which embeds it.
 */
export const ADVANCE_CHECKPOINT_SQL = `
UPDATE stategrid_checkpoint SET commit_lsn = :commit_lsn::pg_lsn, seq = :seq,
  confirmed_lsn = GREATEST(confirmed_lsn, COALESCE(:confirmed_lsn::pg_lsn, confirmed_lsn)),
  changes_applied = changes_applied + :changes,
  max_event_time = GREATEST(max_event_time, :max_event_time::timestamp(3)),
  updated_at = now()
WHERE pipeline_id = :pipeline_id`;

/**
 * Locks the row and tells (`ok`) whether a batch of capture `epoch` whose first change is (first_lsn, first_seq)
 * comes after everything applied: the gate of the one-statement batch, which embeds it.
 */
export const BATCH_FOLLOWS_CHECKPOINT_SQL = `
SELECT epoch = :epoch::bigint AND phase = 'streaming' AND (commit_lsn, seq) < (:first_lsn::pg_lsn, :first_seq::int) AS ok
FROM stategrid_checkpoint WHERE pipeline_id = :pipeline_id FOR UPDATE`;

const ADVANCE_CHECKPOINT = named<AdvanceParam>(ADVANCE_CHECKPOINT_SQL);

/**
 * Advances the checkpoint past a batch written while the batch before it was still in the sink, once that batch is
 * done: only if the checkpoint ends exactly where that batch ends (after_lsn, after_seq) in the capture's epoch (a
 * repair holding the row is waited for, and READ COMMITTED re-checks the condition on the row it leaves). No row
 * returned: it was not, and the caller rolls back.
 */
export const ADVANCE_CHECKPOINT_AFTER = named<
  AdvanceParam | 'epoch' | 'after_lsn' | 'after_seq'
>(`${ADVANCE_CHECKPOINT_SQL}
  AND epoch = :epoch::bigint AND phase = 'streaming' AND (commit_lsn, seq) = (:after_lsn::pg_lsn, :after_seq::int)
RETURNING 1`);

export async function advanceCheckpoint(
  client: pg.ClientBase,
  values: Record<AdvanceParam, unknown>,
): Promise<void> {
  await client.query(boundQuery(ADVANCE_CHECKPOINT, values));
}

/** An idle slot position confirmed with no change applied (WAL of other databases, our markers). */
export async function confirmIdlePosition(
  client: pg.ClientBase,
  pipelineId: string,
  lsn: string,
): Promise<void> {
  await client.query(
    `UPDATE stategrid_checkpoint SET confirmed_lsn = $2::pg_lsn, updated_at = now()
     WHERE pipeline_id = $1 AND confirmed_lsn < $2::pg_lsn`,
    [pipelineId, lsn],
  );
}

/** Starts a new epoch in `phase` with every position at zero; returns the epoch. */
export async function resetCheckpoint(
  db: Db,
  pipelineId: string,
  phase: 'snapshot' | 'new',
): Promise<string> {
  const { rows } = await db.query<{ epoch: string }>(
    `UPDATE stategrid_checkpoint SET phase = $2, epoch = epoch + 1, commit_lsn = '0/0', seq = 0,
       confirmed_lsn = '0/0', snapshot_rows = 0, changes_applied = 0, max_event_time = NULL,
       updated_at = now()
     WHERE pipeline_id = $1 RETURNING epoch::text`,
    [pipelineId, phase],
  );
  return rows[0]?.epoch;
}

/** Counts a committed snapshot chunk; false when a newer snapshot superseded this epoch. */
export async function addSnapshotProgress(
  client: pg.ClientBase,
  pipelineId: string,
  epoch: string,
  rows: number,
): Promise<boolean> {
  const res = await client.query(
    `UPDATE stategrid_checkpoint SET snapshot_rows = snapshot_rows + $2, updated_at = now()
     WHERE pipeline_id = $1 AND epoch = $3`,
    [pipelineId, rows, epoch],
  );
  return res.rowCount === 1;
}

/** Ends the snapshot: streaming starts at the slot's consistent point. False when superseded. */
export async function finishSnapshot(
  client: pg.ClientBase,
  pipelineId: string,
  epoch: string,
  at: { lsn: string; rows: number; maxEventTime: string | null },
): Promise<boolean> {
  const res = await client.query(
    `UPDATE stategrid_checkpoint SET phase = 'streaming', commit_lsn = $2::pg_lsn, seq = 0,
       confirmed_lsn = $2::pg_lsn, snapshot_rows = $3, max_event_time = $4::timestamp(3), updated_at = now()
     WHERE pipeline_id = $1 AND epoch = $5`,
    [pipelineId, at.lsn, at.rows, at.maxEventTime, epoch],
  );
  return res.rowCount === 1;
}

/**
 * DWS is current up to `lsn` (the confirmed position of `epoch` read before a refresh); never moves backwards, and
 * a refresh of an earlier epoch leaves a newer epoch's cursor alone.
 */
export async function advanceDwsCursor(
  db: Db,
  pipelineId: string,
  epoch: string,
  lsn: string,
): Promise<void> {
  await db.query(
    `INSERT INTO stategrid_dws_cursor AS d (pipeline_id, epoch, dws_lsn) VALUES ($1, $2, $3::pg_lsn)
     ON CONFLICT (pipeline_id) DO UPDATE
       SET dws_lsn = CASE WHEN d.epoch = excluded.epoch THEN GREATEST(d.dws_lsn, excluded.dws_lsn)
                     ELSE excluded.dws_lsn END,
           epoch = excluded.epoch
       WHERE d.epoch <= excluded.epoch`,
    [pipelineId, epoch, lsn],
  );
}
