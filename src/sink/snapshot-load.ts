/**
 * Snapshot load SQL: source rows arrive by COPY, as text, in a session temp table (no WAL, never decoded by the
 * walsender); ODS, dead letters, DWD and the DWS dirty marks are then derived set-based from it. Validity is the
 * same rule as src/cdc/validate.ts, written on the same text forms (test/property.test.ts checks they agree).
 */
import type { SourceTable } from '../cdc/changes';

/** Column lists in source order; staging holds them as text, exactly as the row path sees them. */
export const SNAPSHOT_COLUMNS: Record<SourceTable, string[]> = {
  power_user: ['user_id', 'user_name', 'usage_type', 'region_id', 'region_name', 'update_time'],
  power_consumption: [
    'consumption_id',
    'user_id',
    'consumption_amount',
    'consumption_cost',
    'consumption_date',
  ],
};

export const stagingTable = (table: SourceTable) => `stategrid_stage_${table}`;

export const CREATE_STAGING = (table: SourceTable) =>
  `CREATE TEMP TABLE IF NOT EXISTS ${stagingTable(table)} (${SNAPSHOT_COLUMNS[table]
    .map((c) => `${c} text`)
    .join(', ')}) ON COMMIT DELETE ROWS`;

// JavaScript's String.prototype.trim whitespace, so "blank" means the same here and in validate.ts.
const BLANK = `'^[\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*$'`;
const NUMERIC_12_2 = `'^-?\\d{1,10}(\\.\\d{1,2})?$'`;
const NEGATIVE_ZERO = `'^-0+(\\.0+)?$'`;

const amountReason = (col: string) => `WHEN ${col} IS NULL THEN '${col} is null'
    WHEN ${col} = 'NaN' OR ${col} !~ ${NUMERIC_12_2} THEN '${col} is not a NUMERIC(12,2) value'
    WHEN ${col} LIKE '-%' AND ${col} !~ ${NEGATIVE_ZERO} THEN '${col} is negative'`;

/** Reason a staged row is invalid, or NULL. */
const REASON: Record<SourceTable, string> = {
  power_user: `CASE WHEN user_name IS NULL OR user_name ~ ${BLANK} THEN 'user_name is null or blank'
    WHEN region_id IS NULL THEN 'region_id is null'
    WHEN region_name IS NULL THEN 'region_name is null' END`,
  power_consumption: `CASE WHEN user_id IS NULL THEN 'user_id is null'
    WHEN consumption_date IS NULL THEN 'consumption_date is null'
    ${amountReason('consumption_amount')}
    ${amountReason('consumption_cost')} END`,
};

/** The staged rows with their invalid reason; exported for the test that compares it with validate.ts. */
export const STAGED_WITH_REASON = (table: SourceTable) =>
  `SELECT s.*, ${REASON[table]} AS reason FROM ${stagingTable(table)} s`;

const KEY: Record<SourceTable, string> = { power_user: 'user_id', power_consumption: 'consumption_id' };

/** $1: snapshot LSN. Loads ODS, dead letters and DWD for the staged chunk; returns counts, days and max event. */
export const LOAD_STAGED: Record<SourceTable, string> = {
  power_user: `
WITH staged AS MATERIALIZED (${STAGED_WITH_REASON('power_user')}),
ods AS (
  INSERT INTO ods_power_user (user_id, user_name, usage_type, region_id, region_name, update_time, _lsn, _op,
    _synced_at)
  SELECT user_id::bigint, user_name, usage_type, region_id::int, region_name, update_time::timestamp(3),
    $1::pg_lsn, 'R', now() FROM staged
  RETURNING 1),
dead AS (
  INSERT INTO stategrid_dead_letter (table_name, record_key, raw_row, reason, lsn, seq)
  SELECT 'power_user', user_id, jsonb_build_object('user_id', user_id, 'user_name', user_name, 'usage_type',
    usage_type, 'region_id', region_id, 'region_name', region_name, 'update_time', update_time), reason,
    $1::pg_lsn, NULL
  FROM staged WHERE reason IS NOT NULL
  RETURNING 1),
dwd AS (
  INSERT INTO dwd_power_user_info (user_id, user_name, usage_type, region_id, region_name, update_time, etl_time)
  SELECT user_id::bigint, user_name, usage_type, region_id::int, region_name, update_time::timestamp(3), now()
  FROM staged WHERE reason IS NULL
  RETURNING 1)
SELECT (SELECT count(*) FROM ods)::int AS rows, (SELECT count(*) FROM dead)::int AS dead_letters,
  '{}'::text[] AS days,
  NULL::text AS max_event_time`,

  power_consumption: `
WITH staged AS MATERIALIZED (${STAGED_WITH_REASON('power_consumption')}),
ods AS (
  INSERT INTO ods_power_consumption (consumption_id, user_id, consumption_amount, consumption_cost,
    consumption_date, _lsn, _op, _synced_at)
  SELECT consumption_id::bigint, user_id::bigint, consumption_amount::numeric, consumption_cost::numeric,
    consumption_date::timestamp(3), $1::pg_lsn, 'R', now() FROM staged
  RETURNING 1),
dead AS (
  INSERT INTO stategrid_dead_letter (table_name, record_key, raw_row, reason, lsn, seq)
  SELECT 'power_consumption', consumption_id, jsonb_build_object('consumption_id', consumption_id, 'user_id',
    user_id, 'consumption_amount', consumption_amount, 'consumption_cost', consumption_cost, 'consumption_date',
    consumption_date), reason, $1::pg_lsn, NULL
  FROM staged WHERE reason IS NOT NULL
  RETURNING 1),
dwd AS (
  INSERT INTO dwd_power_consumption_detail (consumption_id, user_id, user_name, consumption_amount,
    consumption_cost, consumption_date, region_id, region_name, usage_type, etl_time)
  SELECT c.consumption_id::bigint, c.user_id::bigint, u.user_name, c.consumption_amount::numeric,
    c.consumption_cost::numeric, c.consumption_date::timestamp(3), u.region_id, u.region_name, u.usage_type, now()
  FROM staged c LEFT JOIN dwd_power_user_info u ON u.user_id = c.user_id::bigint
  WHERE c.reason IS NULL
  RETURNING consumption_date, region_id),
dirty AS (
  INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
  SELECT consumption_date::date, region_id, count(*) FROM dwd WHERE region_id IS NOT NULL GROUP BY 1, 2
  ORDER BY 1, 2 -- one lock order for concurrent chunk loads: they wait for each other's marks, never deadlock
  ON CONFLICT (stat_date, region_id) DO UPDATE SET changes = stategrid_dws_dirty.changes + EXCLUDED.changes
  RETURNING 1)
SELECT (SELECT count(*) FROM ods)::int AS rows, (SELECT count(*) FROM dead)::int AS dead_letters,
  (SELECT array_agg(DISTINCT consumption_date::date::text) FROM dwd) AS days,
  (SELECT max(consumption_date)::text FROM dwd) AS max_event_time,
  (SELECT count(*) FROM dirty)::int AS dirty_partitions`,
};

/** Size and last key of the staged chunk: where the next COPY starts. */
export const STAGED_RANGE = (table: SourceTable) =>
  `SELECT count(*)::int AS rows, max(${KEY[table]}::bigint)::text AS last_key FROM ${stagingTable(table)}`;

/** COPY of the next chunk of a source table in key order, after `lastKey` (a bigint we read back ourselves). */
export const COPY_CHUNK = (table: SourceTable, lastKey: string | null, rows: number) => {
  if (lastKey !== null && !/^-?\d+$/.test(lastKey)) throw new Error(`bad snapshot key ${lastKey}`);
  const where = lastKey === null ? '' : ` WHERE ${KEY[table]} > ${lastKey}`;
  return `COPY (SELECT ${SNAPSHOT_COLUMNS[table].join(', ')} FROM ${table}${where} ORDER BY ${KEY[table]}
    LIMIT ${Math.floor(rows)}) TO STDOUT`;
};
