/**
 * The oracle: docs/data-semantics.md written directly against the source tables (and, for what depends on history,
 * the changes the source committed), independently of the pipeline's code. Every function returns SQL text.
 */

/** The pipeline's window settings, as its input or the documented defaults give them. */
export type WindowRules = { timeZone: string; closeGraceMinutes: number; allowedLatenessMinutes: number };

/**
 * What the oracle needs beyond the current source rows: the streamed changes (a relation with commit_lsn, pos,
 * table_name, op, row_data, old_key, commit_time: the WAL audit's, or the change log when a test has no audit),
 * the window rules and whether the pipeline decodes with wal2json (which turns a NaN numeric into null).
 */
export type OracleInputs = { streamed: string; rules: WindowRules; nanArrivesAsNull: boolean };

// Blank = only white space, as Unicode and String.prototype.trim define it, so a name of ideographic spaces is
// blank too.
const BLANK = `'^[\\s\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*$'`;

/** Why a consumption is invalid (null when valid); `v` gives a column's text value. */
export function consumptionReason(v: (column: string) => string, nanAsNull: boolean): string {
  const amount = (c: string) => (nanAsNull ? `nullif(${v(c)}, 'NaN')` : v(c));
  const numeric = (c: string) => `WHEN ${amount(c)} IS NULL THEN '${c} is null'
    WHEN ${amount(c)} = 'NaN' THEN '${c} is not a NUMERIC(12,2) value'
    WHEN ${amount(c)}::numeric < 0 THEN '${c} is negative'`;
  return `(CASE WHEN ${v('user_id')} IS NULL THEN 'user_id is null'
    WHEN ${v('consumption_date')} IS NULL THEN 'consumption_date is null'
    ${numeric('consumption_amount')} ${numeric('consumption_cost')} END)`;
}

/** Why a user is invalid (null when valid). */
export function userReason(v: (column: string) => string): string {
  return `(CASE WHEN ${v('user_name')} IS NULL OR ${v('user_name')} ~ ${BLANK} THEN 'user_name is null or blank'
    WHEN ${v('region_id')} IS NULL THEN 'region_id is null'
    WHEN ${v('region_name')} IS NULL THEN 'region_name is null' END)`;
}

const CONSUMPTION_COLUMNS = [
  'consumption_id',
  'user_id',
  'consumption_amount',
  'consumption_cost',
  'consumption_date',
];
const USER_COLUMNS = ['user_id', 'user_name', 'usage_type', 'region_id', 'region_name', 'update_time'];
const textRow = (alias: string, columns: string[], nanAsNull = false) =>
  `jsonb_build_object(${columns
    .map((c) => {
      const value = `${alias}.${c}::text`;
      return `'${c}', ${nanAsNull && c.startsWith('consumption_') ? `nullif(${value}, 'NaN')` : value}`;
    })
    .join(', ')})`;
/** A JSON row with text values, whatever the JSON types were (the snapshot's and the stream's raw rows). */
export const asTextRow = (json: string) =>
  `(SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each_text(${json}) AS e(k, v))`;

/** The invalid source rows now: table, key, raw row (text values) and the reason the pipeline must give. */
export function invalidSourceRows(nanArrivesAsNull: boolean): string {
  const col = (alias: string) => (c: string) => `${alias}.${c}::text`;
  return `SELECT 'power_consumption' AS table_name, c.consumption_id::text AS record_key,
      ${textRow('c', CONSUMPTION_COLUMNS, nanArrivesAsNull)} AS raw_row,
      ${consumptionReason(col('c'), nanArrivesAsNull)} AS reason
    FROM power_consumption c WHERE ${consumptionReason(col('c'), nanArrivesAsNull)} IS NOT NULL
    UNION ALL
    SELECT 'power_user', u.user_id::text, ${textRow('u', USER_COLUMNS)}, ${userReason(col('u'))}
    FROM power_user u WHERE ${userReason(col('u'))} IS NOT NULL`;
}

const jsonColumn = (c: string) => `(row_data->>'${c}')`;
/** The streamed invalid inserts and updates: one dead letter each, at the change's commit and position. */
function streamedDeadLetters(o: OracleInputs): string {
  return `SELECT table_name, ${jsonColumn('consumption_id')} AS record_key, row_data AS raw_row,
      ${consumptionReason(jsonColumn, o.nanArrivesAsNull)} AS reason, commit_lsn AS lsn, pos AS seq
    FROM ${o.streamed} s WHERE table_name = 'power_consumption' AND op IN ('I', 'U')
      AND ${consumptionReason(jsonColumn, o.nanArrivesAsNull)} IS NOT NULL
    UNION ALL
    SELECT table_name, ${jsonColumn('user_id')}, row_data, ${userReason(jsonColumn)}, commit_lsn, pos
    FROM ${o.streamed} s WHERE table_name = 'power_user' AND op IN ('I', 'U') AND ${userReason(jsonColumn)} IS NOT NULL`;
}

/**
 * A dead letter's raw row (text values) and reason; `blindToNaN` reads a NaN amount or cost as null, for
 * comparisons with a side that cannot tell them apart (wal2json prints NaN as null).
 */
function deadLetterColumns(alias: string, blindToNaN: boolean): string {
  const rawRow = asTextRow(`${alias}.raw_row`);
  if (!blindToNaN) return `${rawRow} AS raw_row, ${alias}.reason`;
  return `${rawRow} || CASE WHEN ${alias}.raw_row ? 'consumption_amount' THEN jsonb_build_object(
      'consumption_amount', nullif(${alias}.raw_row->>'consumption_amount', 'NaN'),
      'consumption_cost', nullif(${alias}.raw_row->>'consumption_cost', 'NaN')) ELSE '{}' END AS raw_row,
    regexp_replace(${alias}.reason, ' is not a NUMERIC\\(12,2\\) value$', ' is null') AS reason`;
}

/**
 * The stream's dead letters, compared in both directions with one per invalid streamed insert or update. Against
 * the WAL audit (wal2json) a pgoutput pipeline's NaN reads as null on both sides.
 */
export function streamedDeadLetterLayer(o: OracleInputs, auditReadsWal: boolean): OracleLayer {
  return {
    name: 'stategrid_dead_letter (streamed)',
    expected: streamedDeadLetters(o),
    actual: `SELECT d.table_name, d.record_key, ${deadLetterColumns('d', auditReadsWal && !o.nanArrivesAsNull)},
        d.lsn, d.seq
      FROM stategrid_dead_letter d WHERE d.seq IS NOT NULL`,
  };
}

/**
 * Each invalid source row's latest dead letter holds the row as it is now, with the oracle's reason. Under wal2json
 * a NaN streamed arrives as null while the snapshot (COPY) sees NaN: NaN reads as null on both sides then.
 */
export function currentDeadLetterLayer(o: OracleInputs): OracleLayer {
  const invalid = invalidSourceRows(o.nanArrivesAsNull);
  return {
    name: 'stategrid_dead_letter (latest per invalid source row)',
    expected: invalid,
    actual: `SELECT DISTINCT ON (d.table_name, d.record_key) d.table_name, d.record_key,
        ${deadLetterColumns('d', o.nanArrivesAsNull)}
      FROM stategrid_dead_letter d JOIN (${invalid}) i ON i.table_name = d.table_name AND i.record_key = d.record_key
      ORDER BY d.table_name, d.record_key, d.lsn DESC, d.seq DESC NULLS LAST`,
  };
}

/** The snapshot's dead letters as the pipeline wrote them (the snapshot reads NaN as NaN under either plugin). */
export const SNAPSHOT_DEAD_LETTERS = `SELECT d.table_name, d.record_key, ${deadLetterColumns('d', false)}
  FROM stategrid_dead_letter d WHERE d.seq IS NULL`;

export type OracleLayer = { name: string; expected: string; actual: string };

/**
 * Max event time of the valid consumptions streamed so far: the watermark before lateness. Snapshot rows do not
 * move it (docs/data-semantics.md#windows).
 */
function maxStreamedEvent(o: OracleInputs): string {
  return `(SELECT max((row_data->>'consumption_date')::timestamp) FROM ${o.streamed} s
    WHERE table_name = 'power_consumption' AND op IN ('I', 'U')
      AND ${consumptionReason(jsonColumn, o.nanArrivesAsNull)} IS NULL)`;
}

/** Day `day` (a date) is due to close by its timer: local midnight after it plus grace has passed. */
const timerDue = (day: string, r: WindowRules) =>
  `((((${day}) + 1)::timestamp AT TIME ZONE '${r.timeZone}') + interval '${r.closeGraceMinutes} minutes' <= now())`;
/** The watermark (max streamed event time minus lateness) has reached the day's end. */
const watermarkPassed = (day: string, o: OracleInputs) =>
  `coalesce(${maxStreamedEvent(o)} - interval '${o.rules.allowedLatenessMinutes} minutes' >= ((${day}) + 1)::timestamp,
    false)`;
/** A day must be closed (final) once its timer is due or the watermark passed it; otherwise it stays provisional. */
export const mustBeFinal = (day: string, o: OracleInputs) =>
  `(${timerDue(day, o.rules)} OR ${watermarkPassed(day, o)})`;

const VALID_USERS = `(SELECT * FROM power_user u WHERE ${userReason((c) => `u.${c}::text`)} IS NULL)`;
const VALID_DETAIL = `(SELECT c.consumption_id, c.user_id, u.user_name,
    c.consumption_amount, c.consumption_cost, c.consumption_date, u.region_id, u.region_name, u.usage_type
  FROM power_consumption c LEFT JOIN ${VALID_USERS} u ON u.user_id = c.user_id
  WHERE ${consumptionReason((col) => `c.${col}::text`, false)} IS NULL)`;

/** With `o`, rows carry the is_final the oracle requires; without, is_final is left out (a sink elsewhere). */
const finalColumn = (o: OracleInputs | null) => (o ? `, ${mustBeFinal('stat_date', o)} AS is_final` : '');
const DWS_STATS_EXPECTED = (
  o: OracleInputs | null,
) => `SELECT region_id, region_name, stat_date, total_consumption,
    total_cost, user_count, max_consumption${finalColumn(o)}
  FROM (SELECT region_id, region_name, consumption_date::date AS stat_date,
      sum(consumption_amount)::numeric(20,2) AS total_consumption, sum(consumption_cost)::numeric(20,2) AS total_cost,
      count(DISTINCT user_id) AS user_count, max(consumption_amount) AS max_consumption
    FROM ${VALID_DETAIL} d WHERE region_id IS NOT NULL GROUP BY 1, 2, 3) g`;
const DWS_RANKING_EXPECTED = (o: OracleInputs | null) => `SELECT stat_date, user_id, user_name, region_id,
    region_name, total_consumption, total_cost, ranking${finalColumn(o)}
  FROM (SELECT consumption_date::date AS stat_date, user_id, user_name, region_id, region_name,
      sum(consumption_amount)::numeric(20,2) AS total_consumption, sum(consumption_cost)::numeric(20,2) AS total_cost,
      row_number() OVER (PARTITION BY consumption_date::date, region_id
        ORDER BY sum(consumption_amount) DESC, user_id)::int AS ranking
    FROM ${VALID_DETAIL} d WHERE region_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5) g`;

/**
 * stategrid_window for every day DWS has rows for (or the window table names): final exactly when the oracle
 * says the day must be closed, closed by the rule that closed it ('timer or watermark' when both hold, since
 * either may have fired first).
 */
function windowLayer(o: OracleInputs): OracleLayer {
  const days = `(SELECT stat_date, ${timerDue('stat_date', o.rules)} AS timer, ${watermarkPassed('stat_date', o)} AS wm
    FROM (SELECT DISTINCT stat_date FROM (${DWS_STATS_EXPECTED(o)}) s UNION SELECT stat_date FROM stategrid_window) d)`;
  return {
    name: 'stategrid_window',
    expected: `SELECT stat_date, timer OR wm, CASE WHEN timer AND wm THEN 'timer or watermark'
        WHEN timer THEN 'timer' WHEN wm THEN 'watermark' END FROM ${days} d`,
    actual: `SELECT d.stat_date, coalesce(w.is_final, false), CASE WHEN w.is_final THEN
        CASE WHEN d.timer AND d.wm AND w.closed_by IN ('timer', 'watermark') THEN 'timer or watermark'
          ELSE w.closed_by END END
      FROM ${days} d LEFT JOIN stategrid_window w ON w.stat_date = d.stat_date`,
  };
}

/** ODS, DWD and DWS, each as the oracle computes it and as the sink holds it (is_final and windows with `o`). */
export function oracleLayers(o: OracleInputs | null): OracleLayer[] {
  const odsUsers = `SELECT user_id, user_name, usage_type, region_id, region_name, update_time FROM power_user`;
  // wal2json prints a NaN amount or cost as null: a streamed NaN (an invalid row) reaches ODS as null, a
  // snapshotted one as NaN, so under wal2json NaN reads as null on both sides.
  const amount = (c: string) => (o?.nanArrivesAsNull ? `nullif(${c}, 'NaN') AS ${c}` : c);
  const odsConsumptions = `SELECT consumption_id, user_id, ${amount('consumption_amount')},
    ${amount('consumption_cost')}, consumption_date FROM power_consumption`;
  return [
    { name: 'ods_power_user', expected: odsUsers, actual: odsUsers.replace('power_user', 'ods_power_user') },
    {
      name: 'ods_power_consumption',
      expected: odsConsumptions,
      actual: odsConsumptions.replace('power_consumption', 'ods_power_consumption'),
    },
    {
      name: 'dwd_power_user_info',
      expected: `SELECT user_id, user_name, usage_type, region_id, region_name, update_time FROM ${VALID_USERS} v`,
      actual: `SELECT user_id, user_name, usage_type, region_id, region_name, update_time FROM dwd_power_user_info`,
    },
    {
      name: 'dwd_power_consumption_detail',
      expected: `SELECT * FROM ${VALID_DETAIL} d`,
      actual: `SELECT consumption_id, user_id, user_name, consumption_amount, consumption_cost, consumption_date,
        region_id, region_name, usage_type FROM dwd_power_consumption_detail`,
    },
    ...finalityLayers(o),
  ];
}

/** The layers that settle only after a day close: DWS (with is_final) and the window table. */
export function finalityLayers(o: OracleInputs | null): OracleLayer[] {
  const isFinal = o ? ', is_final' : '';
  return [
    {
      name: 'dws_region_daily_stats',
      expected: DWS_STATS_EXPECTED(o),
      actual: `SELECT region_id, region_name, stat_date, total_consumption, total_cost, user_count, max_consumption
        ${isFinal} FROM dws_region_daily_stats`,
    },
    {
      name: 'dws_user_ranking',
      expected: DWS_RANKING_EXPECTED(o),
      actual: `SELECT stat_date, user_id, user_name, region_id, region_name, total_consumption, total_cost, ranking
        ${isFinal} FROM dws_user_ranking`,
    },
    ...(o ? [windowLayer(o)] : []),
  ];
}

/**
 * ODS metadata against the change log: a row whose key has a streamed change after the last TRUNCATE of its table
 * carries that last change's op and commit LSN (and was synced after that commit); a row that `verify --repair`
 * wrote after its key's last change (stategrid_repair) is 'R' at that repair's low watermark, as
 * docs/data-semantics.md says; any other row came from the snapshot ('R', at the one snapshot LSN, not after the
 * first streamed commit). Returns the rows that break it.
 */
export const ODS_METADATA_VIOLATIONS = `
WITH repaired AS (
  SELECT DISTINCT ON (table_name, record_key) substr(table_name, 5) AS table_name, record_key AS key, low_lsn
  FROM stategrid_repair WHERE table_name IN ('ods_power_user', 'ods_power_consumption')
    AND action IN ('inserted', 'updated')
  ORDER BY table_name, record_key, low_lsn DESC),
ods AS (
  SELECT 'power_user' AS table_name, user_id::text AS key, _op::text AS op, _lsn, _synced_at FROM ods_power_user
  UNION ALL
  SELECT 'power_consumption', consumption_id::text, _op::text, _lsn, _synced_at FROM ods_power_consumption),
snapshot AS (
  SELECT max(_lsn) AS lsn, count(DISTINCT _lsn) AS lsns FROM ods o WHERE op = 'R' AND NOT EXISTS (
    SELECT 1 FROM repaired r WHERE r.table_name = o.table_name AND r.key = o.key AND r.low_lsn = o._lsn)),
log AS (SELECT l.* FROM ods_change_log l, snapshot WHERE snapshot.lsn IS NULL OR l.commit_lsn >= snapshot.lsn),
keyed AS (
  SELECT table_name, row_data->>(CASE table_name WHEN 'power_user' THEN 'user_id' ELSE 'consumption_id' END) AS key,
    commit_lsn, seq, op::text AS op, commit_time FROM log WHERE op IN ('I', 'U', 'D')
  UNION ALL
  SELECT table_name, old_key->>(CASE table_name WHEN 'power_user' THEN 'user_id' ELSE 'consumption_id' END),
    commit_lsn, seq, 'moved away', commit_time FROM log WHERE old_key IS NOT NULL),
last AS (SELECT DISTINCT ON (table_name, key) * FROM keyed ORDER BY table_name, key, commit_lsn DESC, seq DESC,
  op = 'moved away'),
truncated AS (
  SELECT DISTINCT ON (t) t AS table_name, commit_lsn, seq FROM log, jsonb_array_elements_text(row_data->'tables') t
  WHERE op = 'T' ORDER BY t, commit_lsn DESC, seq DESC)
SELECT o.table_name, o.key, o.op, o._lsn::text, l.op AS last_op, l.commit_lsn::text AS last_lsn
FROM ods o CROSS JOIN snapshot s
LEFT JOIN truncated t ON t.table_name = o.table_name
LEFT JOIN last l ON l.table_name = o.table_name AND l.key = o.key
  AND (t.table_name IS NULL OR (l.commit_lsn, l.seq) > (t.commit_lsn, t.seq))
LEFT JOIN repaired r ON r.table_name = o.table_name AND r.key = o.key
  AND (l.key IS NULL OR r.low_lsn > l.commit_lsn)
WHERE NOT coalesce(CASE WHEN r.key IS NOT NULL THEN o.op = 'R' AND o._lsn = r.low_lsn
    WHEN l.key IS NOT NULL
    THEN o.op = l.op AND o._lsn = l.commit_lsn AND o._synced_at >= coalesce(l.commit_time, '-infinity')
    ELSE o.op = 'R' AND s.lsns = 1 AND o._lsn <= coalesce((SELECT min(commit_lsn) FROM log), o._lsn) END, false)
ORDER BY 1, 2`;

/** The oracle's stats rows of one day and region as a JSON array ($1 date, $2 region), as dws_revision keeps them. */
export const REGION_DAY_STATS_JSON = `SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.region_name), 'null'::jsonb)
  FROM (${DWS_STATS_EXPECTED(null)}) s WHERE s.stat_date = $1::date AND s.region_id = $2`;
