/** Pipeline bookkeeping SQL: checkpoint (the single source of truth for resume) and dead letters. */

export const ENSURE_CHECKPOINT = `
INSERT INTO stategrid_checkpoint (pipeline_id, slot_name) VALUES ($1, $2)
ON CONFLICT (pipeline_id) DO NOTHING`;

export const LOCK_CHECKPOINT = `
SELECT pipeline_id, slot_name, phase, epoch::text, commit_lsn::text, seq, confirmed_lsn::text, dws_lsn::text, snapshot_rows,
  changes_applied, max_event_time::text
FROM stategrid_checkpoint WHERE pipeline_id = $1 FOR UPDATE`;

export const READ_CHECKPOINT = LOCK_CHECKPOINT.replace('FOR UPDATE', '');

/**
 * The checkpoint after a batch, with its parameters named by number: pipeline, commit lsn, seq, confirmed lsn (or
 * null to keep), changes applied, max event time. One definition for the batch transaction and the one-statement
 * batch, which numbers its parameters after the batch's own.
 */
export const advanceCheckpoint = (p: number[]) => `
UPDATE stategrid_checkpoint SET commit_lsn = $${p[1]}::pg_lsn, seq = $${p[2]},
  confirmed_lsn = GREATEST(confirmed_lsn, COALESCE($${p[3]}::pg_lsn, confirmed_lsn)),
  changes_applied = changes_applied + $${p[4]},
  max_event_time = GREATEST(max_event_time, $${p[5]}::timestamp(3)),
  updated_at = now()
WHERE pipeline_id = $${p[0]}`;

export const ADVANCE_CHECKPOINT = advanceCheckpoint([1, 2, 3, 4, 5, 6]);

export const CONFIRM_IDLE_POSITION = `
UPDATE stategrid_checkpoint SET confirmed_lsn = $2::pg_lsn, updated_at = now()
WHERE pipeline_id = $1 AND confirmed_lsn < $2::pg_lsn`;

export const ADD_SNAPSHOT_PROGRESS = `
UPDATE stategrid_checkpoint SET snapshot_rows = snapshot_rows + $2, updated_at = now() WHERE pipeline_id = $1 AND epoch = $3`;

export const FINISH_SNAPSHOT = `
UPDATE stategrid_checkpoint SET phase = 'streaming', commit_lsn = $2::pg_lsn, seq = 0, confirmed_lsn = $2::pg_lsn,
  snapshot_rows = $3, max_event_time = $4::timestamp(3), updated_at = now()
WHERE pipeline_id = $1 AND epoch = $5`;

export const RESET_CHECKPOINT = `
UPDATE stategrid_checkpoint SET phase = $2, epoch = epoch + 1, commit_lsn = '0/0', seq = 0, confirmed_lsn = '0/0', dws_lsn = '0/0',
  snapshot_rows = 0, changes_applied = 0, max_event_time = NULL, updated_at = now()
WHERE pipeline_id = $1
RETURNING epoch::text`;

// $n: JSON array of {t: table, k: key, r: raw row, reason, l: lsn, s: seq}.
export const INSERT_DEAD_LETTERS_FROM = (param: string) => `
INSERT INTO stategrid_dead_letter (table_name, record_key, raw_row, reason, lsn, seq)
SELECT t, k, r, reason, l, s FROM jsonb_to_recordset(${param}::jsonb)
  AS x(t text, k text, r jsonb, reason text, l pg_lsn, s int)`;
export const INSERT_DEAD_LETTERS = INSERT_DEAD_LETTERS_FROM('$1');

// Sink tables a re-snapshot empties before it loads again.
export const CLEAR_FOR_SNAPSHOT = [
  'DELETE FROM ods_power_user',
  'DELETE FROM ods_power_consumption',
  'DELETE FROM dwd_power_user_info',
  'DELETE FROM dwd_power_consumption_detail',
  'DELETE FROM dws_region_daily_stats',
  'DELETE FROM dws_user_ranking',
  'DELETE FROM stategrid_dws_dirty',
  // Dead letters of an earlier (interrupted or superseded) snapshot: this one finds the invalid rows again.
  'DELETE FROM stategrid_dead_letter WHERE seq IS NULL',
];
