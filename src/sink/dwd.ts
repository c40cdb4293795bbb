/** DWD layer SQL: valid users, and consumptions LEFT JOINed to the current valid user row. */
import { INSERT_CHANGE_LOG_FROM } from './ods';
import { advanceCheckpoint, INSERT_DEAD_LETTERS_FROM } from './ops';

const USER_COLUMNS_FROM_U = `u.user_name, u.region_id, u.region_name, u.usage_type`;

// $1: JSON array of valid user rows.
export const UPSERT_DWD_USERS = `
INSERT INTO dwd_power_user_info (user_id, user_name, usage_type, region_id, region_name, update_time, etl_time)
SELECT user_id, user_name, usage_type, region_id, region_name, update_time, now()
FROM jsonb_to_recordset($1::jsonb) AS r(user_id bigint, user_name varchar, usage_type varchar, region_id int,
  region_name varchar, update_time timestamp(3))
ON CONFLICT (user_id) DO UPDATE SET user_name = EXCLUDED.user_name, usage_type = EXCLUDED.usage_type,
  region_id = EXCLUDED.region_id, region_name = EXCLUDED.region_name, update_time = EXCLUDED.update_time,
  etl_time = EXCLUDED.etl_time`;

export const DELETE_DWD_USERS = `DELETE FROM dwd_power_user_info WHERE user_id = ANY($1::bigint[])`;
export const TRUNCATE_DWD_USERS = `DELETE FROM dwd_power_user_info`;

// $1: JSON array of valid consumption rows; user columns come from the current DWD user (or null).
export const UPSERT_DWD_DETAILS = `
INSERT INTO dwd_power_consumption_detail (consumption_id, user_id, user_name, consumption_amount, consumption_cost,
  consumption_date, region_id, region_name, usage_type, etl_time)
SELECT c.consumption_id, c.user_id, u.user_name, c.consumption_amount, c.consumption_cost, c.consumption_date,
  u.region_id, u.region_name, u.usage_type, now()
FROM jsonb_to_recordset($1::jsonb) AS c(consumption_id bigint, user_id bigint, consumption_amount numeric,
  consumption_cost numeric, consumption_date timestamp(3))
LEFT JOIN dwd_power_user_info u ON u.user_id = c.user_id
ON CONFLICT (consumption_id) DO UPDATE SET user_id = EXCLUDED.user_id, user_name = EXCLUDED.user_name,
  consumption_amount = EXCLUDED.consumption_amount, consumption_cost = EXCLUDED.consumption_cost,
  consumption_date = EXCLUDED.consumption_date, region_id = EXCLUDED.region_id,
  region_name = EXCLUDED.region_name, usage_type = EXCLUDED.usage_type, etl_time = EXCLUDED.etl_time`;

export const DELETE_DWD_DETAILS = `DELETE FROM dwd_power_consumption_detail WHERE consumption_id = ANY($1::bigint[])`;
export const TRUNCATE_DWD_DETAILS = `DELETE FROM dwd_power_consumption_detail`;

// Re-enrich every detail row of the given users from their current DWD state ($1: bigint[]).
export const REENRICH_DETAILS_OF_USERS = `
UPDATE dwd_power_consumption_detail d
SET user_name = u.user_name, region_id = u.region_id, region_name = u.region_name, usage_type = u.usage_type,
  etl_time = now()
FROM unnest($1::bigint[]) AS k(user_id)
LEFT JOIN dwd_power_user_info u ON u.user_id = k.user_id
WHERE d.user_id = k.user_id
  AND (d.user_name, d.region_id, d.region_name, d.usage_type) IS DISTINCT FROM (${USER_COLUMNS_FROM_U})`;

export const DETACH_ALL_DETAILS_FROM_USERS = `
UPDATE dwd_power_consumption_detail
SET user_name = NULL, region_id = NULL, region_name = NULL, usage_type = NULL, etl_time = now()
WHERE (user_name, region_id, region_name, usage_type) IS DISTINCT FROM (NULL, NULL, NULL, NULL)`;

// Marks the DWS partitions (day, region) holding the given consumptions or users' rows as dirty.
export const MARK_DIRTY_FOR_KEYS = `
INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
SELECT consumption_date::date, region_id, count(*) FROM (
  -- Two index lookups: an OR of the two conditions would scan the whole table on every batch.
  SELECT consumption_date, region_id FROM dwd_power_consumption_detail WHERE consumption_id = ANY($1::bigint[])
  UNION ALL
  SELECT consumption_date, region_id FROM dwd_power_consumption_detail
  WHERE user_id = ANY($2::bigint[]) AND consumption_id <> ALL($1::bigint[])) d
WHERE region_id IS NOT NULL
GROUP BY 1, 2
ON CONFLICT (stat_date, region_id) DO UPDATE SET changes = stategrid_dws_dirty.changes + EXCLUDED.changes`;

export const MARK_ALL_DIRTY = `
INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
SELECT consumption_date::date, region_id, count(*) FROM dwd_power_consumption_detail
WHERE region_id IS NOT NULL GROUP BY 1, 2
ON CONFLICT (stat_date, region_id) DO UPDATE SET changes = stategrid_dws_dirty.changes + EXCLUDED.changes`;

/**
 * A batch that touches only consumptions, in one statement: change log, dead letters, ODS, DWD and the DWS dirty
 * marks of the rows' old and new partitions (the old ones read from the statement's snapshot, before its writes).
 * $1 change-log JSON, $2 final rows JSON (with _lsn, _op, _valid), $3 deleted keys, $4 keys leaving DWD (deleted
 * or invalid), $5 every touched key, $6 dead letters JSON.
 *
 * `atCheckpoint`: the statement is the whole transaction. It locks the checkpoint row and writes only if the
 * epoch matches and the batch's first change ($9 lsn, $10 seq) follows the checkpoint, then advances it ($7
 * pipeline, $8 epoch, $11/$12 last change, $13 confirmed position or null, $14 changes, $15 max event time);
 * `ok` says whether it wrote.
 */
function applyConsumptionsSql(atCheckpoint: boolean): string {
  const gate = atCheckpoint ? ' AND (SELECT ok FROM gate)' : '';
  const where = atCheckpoint ? ' WHERE (SELECT ok FROM gate)' : '';
  const checkpoint = atCheckpoint
    ? `cp AS MATERIALIZED (
  SELECT epoch = $8::bigint AND phase = 'streaming' AND (commit_lsn, seq) < ($9::pg_lsn, $10::int) AS ok
  FROM stategrid_checkpoint WHERE pipeline_id = $7 FOR UPDATE),
gate AS MATERIALIZED (SELECT coalesce((SELECT ok FROM cp), false) AS ok),
advanced AS (${advanceCheckpoint([7, 11, 12, 13, 14, 15])}${gate}),
`
    : '';
  return `
WITH ${checkpoint}logged AS (${INSERT_CHANGE_LOG_FROM('$1')}${where} RETURNING 1),
dead AS (${INSERT_DEAD_LETTERS_FROM('$6')}${where} RETURNING 1),
c AS MATERIALIZED (
  SELECT * FROM jsonb_to_recordset($2::jsonb) AS r(consumption_id bigint, user_id bigint,
    consumption_amount numeric, consumption_cost numeric, consumption_date timestamp(3), _lsn pg_lsn, _op char(1),
    _valid boolean)${where}),
ods_up AS (
  INSERT INTO ods_power_consumption (consumption_id, user_id, consumption_amount, consumption_cost,
    consumption_date, _lsn, _op, _synced_at)
  SELECT consumption_id, user_id, consumption_amount, consumption_cost, consumption_date, _lsn, _op, now() FROM c
  ON CONFLICT (consumption_id) DO UPDATE SET user_id = EXCLUDED.user_id,
    consumption_amount = EXCLUDED.consumption_amount, consumption_cost = EXCLUDED.consumption_cost,
    consumption_date = EXCLUDED.consumption_date, _lsn = EXCLUDED._lsn, _op = EXCLUDED._op,
    _synced_at = EXCLUDED._synced_at
  RETURNING 1),
ods_del AS (DELETE FROM ods_power_consumption WHERE consumption_id = ANY($3::bigint[])${gate} RETURNING 1),
old_parts AS (
  SELECT consumption_date, region_id FROM dwd_power_consumption_detail
  WHERE consumption_id = ANY($5::bigint[])${gate}),
dwd_del AS (DELETE FROM dwd_power_consumption_detail WHERE consumption_id = ANY($4::bigint[])${gate} RETURNING 1),
dwd_up AS (
  INSERT INTO dwd_power_consumption_detail (consumption_id, user_id, user_name, consumption_amount,
    consumption_cost, consumption_date, region_id, region_name, usage_type, etl_time)
  SELECT c.consumption_id, c.user_id, u.user_name, c.consumption_amount, c.consumption_cost, c.consumption_date,
    u.region_id, u.region_name, u.usage_type, now()
  FROM c LEFT JOIN dwd_power_user_info u ON u.user_id = c.user_id
  WHERE c._valid
  ON CONFLICT (consumption_id) DO UPDATE SET user_id = EXCLUDED.user_id, user_name = EXCLUDED.user_name,
    consumption_amount = EXCLUDED.consumption_amount, consumption_cost = EXCLUDED.consumption_cost,
    consumption_date = EXCLUDED.consumption_date, region_id = EXCLUDED.region_id,
    region_name = EXCLUDED.region_name, usage_type = EXCLUDED.usage_type, etl_time = EXCLUDED.etl_time
  RETURNING consumption_date, region_id),
dirty AS (
  INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
  SELECT consumption_date::date, region_id, count(*)
  FROM (SELECT * FROM old_parts UNION ALL SELECT * FROM dwd_up) d
  WHERE region_id IS NOT NULL
  GROUP BY 1, 2
  ON CONFLICT (stat_date, region_id) DO UPDATE SET changes = stategrid_dws_dirty.changes + EXCLUDED.changes
  RETURNING 1)
SELECT ${atCheckpoint ? '(SELECT ok FROM gate) AS ok, ' : ''}(SELECT count(*) FROM logged)::int AS logged, (SELECT count(*) FROM dead)::int AS dead,
  (SELECT count(*) FROM ods_up)::int + (SELECT count(*) FROM ods_del)::int AS ods,
  (SELECT count(*) FROM dwd_up)::int + (SELECT count(*) FROM dwd_del)::int AS dwd,
  (SELECT count(*) FROM dirty)::int AS dirty`;
}

export const APPLY_CONSUMPTIONS = applyConsumptionsSql(false);
export const APPLY_CONSUMPTIONS_AT_CHECKPOINT = applyConsumptionsSql(true);
