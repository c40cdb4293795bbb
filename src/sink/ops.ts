/** Pipeline bookkeeping SQL beside the checkpoint: dead letters, and what a re-snapshot empties. */
import { LAYER_TABLES } from '../schema/tables';

/** Dead letters from a JSON array of {table_name, record_key, raw_row, reason, lsn, seq}; `param` is its placeholder. */
export const insertDeadLetters = (param: string) => `
INSERT INTO stategrid_dead_letter (table_name, record_key, raw_row, reason, lsn, seq)
SELECT table_name, record_key, raw_row, reason, lsn, seq FROM jsonb_to_recordset(${param}::jsonb)
  AS x(table_name text, record_key text, raw_row jsonb, reason text, lsn pg_lsn, seq int)`;
export const INSERT_DEAD_LETTERS = insertDeadLetters('$1');

// Sink tables a re-snapshot empties before it loads again.
export const CLEAR_FOR_SNAPSHOT = [
  ...LAYER_TABLES.map((t) => `DELETE FROM ${t}`),
  'DELETE FROM stategrid_dws_dirty',
  'DELETE FROM stategrid_dws_delta',
  'DELETE FROM stategrid_dws_delta_parts',
  'DELETE FROM dws_user_day_total',
  // Dead letters of an earlier (interrupted or superseded) snapshot: this one finds the invalid rows again.
  'DELETE FROM stategrid_dead_letter WHERE seq IS NULL',
];
