/** ODS layer SQL: current-state mirror of the source rows and the append-only change log. */

// $1: JSON array of user rows, each with _lsn and _op.
export const UPSERT_ODS_USERS = `
INSERT INTO ods_power_user (user_id, user_name, usage_type, region_id, region_name, update_time, _lsn, _op, _synced_at)
SELECT user_id, user_name, usage_type, region_id, region_name, update_time, _lsn, _op, now()
FROM jsonb_to_recordset($1::jsonb) AS r(user_id bigint, user_name varchar, usage_type varchar, region_id int,
  region_name varchar, update_time timestamp(3), _lsn pg_lsn, _op char(1))
ON CONFLICT (user_id) DO UPDATE SET user_name = EXCLUDED.user_name, usage_type = EXCLUDED.usage_type,
  region_id = EXCLUDED.region_id, region_name = EXCLUDED.region_name, update_time = EXCLUDED.update_time,
  _lsn = EXCLUDED._lsn, _op = EXCLUDED._op, _synced_at = EXCLUDED._synced_at`;

export const UPSERT_ODS_CONSUMPTIONS = `
INSERT INTO ods_power_consumption (consumption_id, user_id, consumption_amount, consumption_cost, consumption_date,
  _lsn, _op, _synced_at)
SELECT consumption_id, user_id, consumption_amount, consumption_cost, consumption_date, _lsn, _op, now()
FROM jsonb_to_recordset($1::jsonb) AS r(consumption_id bigint, user_id bigint, consumption_amount numeric,
  consumption_cost numeric, consumption_date timestamp(3), _lsn pg_lsn, _op char(1))
ON CONFLICT (consumption_id) DO UPDATE SET user_id = EXCLUDED.user_id,
  consumption_amount = EXCLUDED.consumption_amount, consumption_cost = EXCLUDED.consumption_cost,
  consumption_date = EXCLUDED.consumption_date, _lsn = EXCLUDED._lsn, _op = EXCLUDED._op,
  _synced_at = EXCLUDED._synced_at`;

// $1: bigint[] of keys.
export const DELETE_ODS_USERS = `DELETE FROM ods_power_user WHERE user_id = ANY($1::bigint[])`;
export const DELETE_ODS_CONSUMPTIONS = `DELETE FROM ods_power_consumption WHERE consumption_id = ANY($1::bigint[])`;
export const TRUNCATE_ODS_USERS = `DELETE FROM ods_power_user`;
export const TRUNCATE_ODS_CONSUMPTIONS = `DELETE FROM ods_power_consumption`;

// $n: JSON array of {l: commit lsn, s: seq, t: table, o: op, r: row, k: old key, c: commit time}.
export const INSERT_CHANGE_LOG_FROM = (param: string) => `
INSERT INTO ods_change_log (commit_lsn, seq, table_name, op, row_data, old_key, commit_time)
SELECT l, s, t, o, r, k, c FROM jsonb_to_recordset(${param}::jsonb)
  AS x(l pg_lsn, s int, t text, o char(1), r jsonb, k jsonb, c timestamptz)`;
export const INSERT_CHANGE_LOG = INSERT_CHANGE_LOG_FROM('$1');
