/**
 * DWD layer SQL, built from the table spec: valid users, and valid consumptions LEFT JOINed to the current valid
 * user row; plus the DWS deltas (and, for truncates and snapshots, dirty marks) that DWD changes leave, and the
 * one-statement streaming batch.
 */
import { CONSUMPTION_TABLE, USER_ENRICHMENT, USER_TABLE } from '../schema/tables';
import { named, quoteIdent, quoteLiteral, type Statement } from '../db/sql';
import { ADVANCE_CHECKPOINT_SQL, BATCH_FOLLOWS_CHECKPOINT_SQL, type AdvanceParam } from './checkpoint';
import {
  changeLogEntries,
  type ChangeLogParam,
  insertChangeLogFrom,
  insertOds,
  odsKeyOf,
  recordsetOf,
  sentOrKept,
  unlessUnchanged,
  updateFromExcluded,
} from './ods';
import type { ExtraColumn } from './ods-columns';
import { insertDeadLetters } from './ops';

const USER_COLUMNS = USER_TABLE.columns.map((c) => c.name);
const CONSUMPTION_COLUMNS = CONSUMPTION_TABLE.columns.map((c) => c.name);
const DETAIL_COLUMNS = [...CONSUMPTION_COLUMNS, ...USER_ENRICHMENT, 'etl_time'];

/**
 * Writes valid user rows (`select` gives the source columns from `from`) into DWD; `changedOnly` upserts leave
 * rows that already hold the values alone.
 */
export function insertDwdUsers(
  from: string,
  opts: { select?: string; upsert: boolean; changedOnly?: boolean; returning?: string },
): string {
  const cols = [...USER_COLUMNS, 'etl_time'];
  const unchanged = opts.changedOnly ? unlessUnchanged(USER_TABLE.dwd, USER_COLUMNS) : '';
  const conflict = opts.upsert
    ? `\nON CONFLICT (${USER_TABLE.key}) DO UPDATE SET ${updateFromExcluded(USER_TABLE.key, cols)}${unchanged}`
    : '';
  return `INSERT INTO ${USER_TABLE.dwd} (${cols.join(', ')})
SELECT ${opts.select ?? USER_COLUMNS.join(', ')}, now() FROM ${from}${conflict}${
    opts.returning ? `\nRETURNING ${opts.returning}` : ''
  }`;
}

/**
 * Writes consumption rows of `from` (aliased `c`) into DWD, each with the user columns of its current DWD user
 * (null when there is none). `userKey` is c's user id as bigint; `select` the consumption columns.
 */
export function insertDwdDetails(
  from: string,
  opts: {
    select?: string;
    userKey?: string;
    where?: string;
    upsert: boolean;
    changedOnly?: boolean;
    returning?: string;
  },
): string {
  const select = opts.select ?? CONSUMPTION_COLUMNS.map((c) => `c.${c}`).join(', ');
  const enrichment = USER_ENRICHMENT.map((c) => `u.${c}`).join(', ');
  const unchanged = opts.changedOnly
    ? unlessUnchanged(CONSUMPTION_TABLE.dwd, DETAIL_COLUMNS.slice(0, -1))
    : '';
  const conflict = opts.upsert
    ? `\nON CONFLICT (${CONSUMPTION_TABLE.key}) DO UPDATE SET ${updateFromExcluded(CONSUMPTION_TABLE.key, DETAIL_COLUMNS)}${unchanged}`
    : '';
  return `INSERT INTO ${CONSUMPTION_TABLE.dwd} (${DETAIL_COLUMNS.join(', ')})
SELECT ${select}, ${enrichment}, now()
FROM ${from} LEFT JOIN ${USER_TABLE.dwd} u ON u.user_id = ${opts.userKey ?? 'c.user_id'}
${opts.where ? `WHERE ${opts.where}` : ''}${conflict}${opts.returning ? `\nRETURNING ${opts.returning}` : ''}`;
}

/**
 * Marks the DWS partitions (day, region) of the DWD rows `rows` selects (consumption_date, region_id) dirty. In
 * one lock order, so concurrent writers wait for each other's marks and never deadlock.
 */
export const markDirty = (rows: string) => `
INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
SELECT consumption_date::date, region_id, count(*) FROM (${rows}) d
WHERE region_id IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (stat_date, region_id) DO UPDATE SET changes = stategrid_dws_dirty.changes + EXCLUDED.changes`;

/**
 * Marks the given partitions for a rebuild from DWD without counting changes (a repair wrote DWD without deltas:
 * if the repair dies before it recomputes them, the next refresh does). $1 date[], $2 int[].
 */
export const MARK_FOR_REBUILD = `
INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
SELECT DISTINCT stat_date, region_id, 0 FROM unnest($1::date[], $2::int[]) AS p(stat_date, region_id)
ORDER BY 1, 2
ON CONFLICT (stat_date, region_id) DO NOTHING`;

/** Detail columns a DWS delta is made of: the per-user day totals' key and the measures. */
const DELTA_COLUMNS =
  'consumption_date, region_id, user_id, region_name, user_name, consumption_amount, consumption_cost';

const INSERT_DELTAS = `
INSERT INTO stategrid_dws_delta (stat_date, region_id, user_id, region_name, user_name, amount, cost, rows)`;

/**
 * Records the (day, region) partitions of the deltas a CTE inserted (RETURNING stat_date, region_id) in the logged
 * stategrid_dws_delta_parts, in the same statement: if a crash empties the unlogged deltas, these partitions are
 * rebuilt from DWD (dws.RECOVER_LOST_DELTAS).
 */
const recordDeltaParts = (inserted: string) => `
INSERT INTO stategrid_dws_delta_parts (stat_date, region_id) SELECT DISTINCT stat_date, region_id FROM ${inserted}`;

/** The DWS deltas of detail rows `rows` selects, netted (see recordDeltas), as a SELECT; `also` adds a condition. */
const netDeltas = (rows: string, also = '') => `
SELECT consumption_date::date, region_id, user_id, region_name, user_name, consumption_amount, consumption_cost,
  sum(n) FROM (${rows}) d
WHERE region_id IS NOT NULL${also}
GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(n) <> 0`;

/**
 * Appends the DWS deltas of detail rows: `rows` selects DELTA_COLUMNS and `n`, -1 for a row as it was before the
 * change and +1 as it is after. A row the change left as it was (a user update that kept name and region) cancels
 * out here. Orphans (no region) are outside DWS and leave none.
 */
export const recordDeltas = (rows: string) =>
  `WITH d AS (${INSERT_DELTAS}${netDeltas(rows)}
RETURNING stat_date, region_id)${recordDeltaParts('d')}`;

/** The deltas of the detail rows the one-statement batch wrote (its CTE dwd_up, n = +1), as they are. */
const NEW_ROW_DELTAS = `
SELECT consumption_date::date, region_id, user_id, region_name, user_name, consumption_amount, consumption_cost, n
FROM dwd_up WHERE region_id IS NOT NULL`;

/**
 * The DWS deltas of the one-statement batch, from its CTEs old_parts (detail rows before, n = -1) and dwd_up (after,
 * n = +1). A batch that found no detail row before its writes (plain inserts, the common streaming case) has
 * nothing to cancel: its rows go in as they are, without the hash aggregate over every delta column (which cost
 * more than inserting them). Any other batch nets old and new rows as recordDeltas does. The refresh sums rows of
 * equal values either way.
 */
const BATCH_DELTAS = `${INSERT_DELTAS}${NEW_ROW_DELTAS} AND NOT EXISTS (SELECT 1 FROM old_parts)
UNION ALL${netDeltas('SELECT * FROM old_parts UNION ALL SELECT * FROM dwd_up', ' AND EXISTS (SELECT 1 FROM old_parts)')}`;

// $1: JSON array of valid user rows.
export const UPSERT_DWD_USERS = insertDwdUsers(
  `jsonb_to_recordset($1::jsonb) AS ${recordsetOf('power_user', 'r')}`,
  { upsert: true },
);
export const DELETE_DWD_USERS = `DELETE FROM ${USER_TABLE.dwd} WHERE user_id = ANY($1::bigint[])`;
export const EMPTY_DWD_USERS = `DELETE FROM ${USER_TABLE.dwd}`;

// $1: JSON array of valid consumption rows.
export const UPSERT_DWD_DETAILS = insertDwdDetails(
  `jsonb_to_recordset($1::jsonb) AS ${recordsetOf('power_consumption', 'c')}`,
  { upsert: true },
);
export const DELETE_DWD_DETAILS = `DELETE FROM ${CONSUMPTION_TABLE.dwd} WHERE consumption_id = ANY($1::bigint[])`;
export const EMPTY_DWD_DETAILS = `DELETE FROM ${CONSUMPTION_TABLE.dwd}`;

const ENRICHMENT_TUPLE = `(${USER_ENRICHMENT.join(', ')})`;

// Re-enrich every detail row of the given users from their current DWD state ($1: bigint[]).
export const REENRICH_DETAILS_OF_USERS = `
UPDATE ${CONSUMPTION_TABLE.dwd} d
SET ${USER_ENRICHMENT.map((c) => `${c} = u.${c}`).join(', ')}, etl_time = now()
FROM unnest($1::bigint[]) AS k(user_id)
LEFT JOIN ${USER_TABLE.dwd} u ON u.user_id = k.user_id
WHERE d.user_id = k.user_id
  AND (${USER_ENRICHMENT.map((c) => `d.${c}`).join(', ')}) IS DISTINCT FROM (${USER_ENRICHMENT.map((c) => `u.${c}`).join(', ')})`;

export const DETACH_ALL_DETAILS_FROM_USERS = `
UPDATE ${CONSUMPTION_TABLE.dwd}
SET ${USER_ENRICHMENT.map((c) => `${c} = NULL`).join(', ')}, etl_time = now()
WHERE ${ENRICHMENT_TUPLE} IS DISTINCT FROM (${USER_ENRICHMENT.map(() => 'NULL').join(', ')})`;

// `cols` of the detail rows of the given consumptions ($1) and of the given users ($2). Two index lookups: an OR of
// the two conditions would scan the whole table on every batch.
export const detailsOfKeys = (cols: string) => `
  SELECT ${cols} FROM ${CONSUMPTION_TABLE.dwd} WHERE consumption_id = ANY($1::bigint[])
  UNION ALL
  SELECT ${cols} FROM ${CONSUMPTION_TABLE.dwd}
  WHERE user_id = ANY($2::bigint[]) AND consumption_id <> ALL($1::bigint[])`;
// The detail rows of the given consumptions ($1) and users ($2) leave DWS (before DWD changes) or enter it (after).
export const DELTAS_LEAVING_FOR_KEYS = recordDeltas(detailsOfKeys(`${DELTA_COLUMNS}, -1 AS n`));
export const DELTAS_ENTERING_FOR_KEYS = recordDeltas(detailsOfKeys(`${DELTA_COLUMNS}, 1 AS n`));

export const MARK_ALL_DIRTY = markDirty(`SELECT consumption_date, region_id FROM ${CONSUMPTION_TABLE.dwd}`);

/**
 * The consumption columns of a change log entry `alias`'s row_data, converted as jsonb_to_recordset converts
 * them: spec columns to their type, `extra` ones as text (an update's value the source left out: the ODS row's,
 * see sentOrKept). Reading fields of the parsed entry is cheaper than parsing the row's JSON a second time (or
 * calling jsonb_to_record once per row).
 */
function columnsOfRowData(alias: string, extra: readonly ExtraColumn[]): string {
  const field = (name: string) => `${alias}.row_data ->> ${quoteLiteral(name)}`;
  const key = CONSUMPTION_TABLE.key;
  const keyBefore = odsKeyOf(`coalesce(${alias}.old_key ->> '${key}', ${field(key)})`);
  const unsent = (name: string) => `${alias}.op = 'U' AND NOT ${alias}.row_data ? ${quoteLiteral(name)}`;
  return [
    ...CONSUMPTION_TABLE.columns.map((c) => `(${field(c.name)})::${c.type} AS ${c.name}`),
    ...extra.map(
      (c) =>
        `${sentOrKept('power_consumption', c, field(c.name), unsent(c.name), keyBefore)} AS ${quoteIdent(c.name)}`,
    ),
  ].join(', ');
}

/**
 * A batch that touches only consumptions, in one statement: change log, dead letters, ODS, DWD and the DWS deltas
 * of the rows' old and new states (the old ones read from the statement's snapshot, before its writes).
 * Named parameters: the change log's (see ods.changeLogEntries), upsert_at (the place in the change log of the
 * change that left each upserted key's final row), upsert_valid (whether that row is valid), deleted (keys),
 * leaving (keys leaving DWD: deleted or invalid), touched (every key), dead_letters (JSON). The final rows are
 * read from the change log's parsed row_data, with that change's commit_lsn and op as their _lsn and _op: each
 * row's JSON is parsed once.
 *
 * `atCheckpoint`: the statement is the whole transaction. It locks the checkpoint row and writes only if the
 * epoch matches and the batch's first change (first_lsn, first_seq) follows the checkpoint, then advances it to
 * the last change (see ADVANCE_CHECKPOINT_SQL for its parameters); `ok` says whether it wrote. `extra`: source
 * columns beyond the spec that ODS mirrors (DWD takes only its own columns and never sees them).
 *
 * `newKeys`: every change inserts a key of its own (the common streaming batch), so ODS and DWD take plain
 * inserts, there are no old detail rows to read or rows to delete, and the deltas are the new rows. Without the
 * conflict handling and the read of old rows the statement cost 8 us less per row. A key that is there after all
 * (a repair wrote it first) fails the statement on the key, having written nothing: the caller then runs the
 * general form.
 */
function applyConsumptionsSql(atCheckpoint: boolean, extra: readonly ExtraColumn[], newKeys = false): string {
  const gate = atCheckpoint ? ' AND (SELECT ok FROM gate)' : '';
  const where = atCheckpoint ? ' WHERE (SELECT ok FROM gate)' : '';
  const checkpoint = atCheckpoint
    ? `cp AS MATERIALIZED (${BATCH_FOLLOWS_CHECKPOINT_SQL}),
gate AS MATERIALIZED (SELECT coalesce((SELECT ok FROM cp), false) AS ok),
advanced AS (${ADVANCE_CHECKPOINT_SQL}${gate}),
`
    : '';
  const upsert = !newKeys;
  const removals = newKeys
    ? ''
    : `
ods_del AS (DELETE FROM ${CONSUMPTION_TABLE.ods} WHERE consumption_id = ANY(:deleted::bigint[])${gate} RETURNING 1),
old_parts AS (
  SELECT ${DELTA_COLUMNS}, -1 AS n FROM ${CONSUMPTION_TABLE.dwd}
  WHERE consumption_id = ANY(:touched::bigint[])${gate}),
dwd_del AS (DELETE FROM ${CONSUMPTION_TABLE.dwd} WHERE consumption_id = ANY(:leaving::bigint[])${gate} RETURNING 1),`;
  const deltas = newKeys ? `${INSERT_DELTAS}${NEW_ROW_DELTAS}` : BATCH_DELTAS;
  const removed = (cte: string) => (newKeys ? '' : ` + (SELECT count(*) FROM ${cte})::int`);
  return `
WITH ${checkpoint}log AS MATERIALIZED (SELECT * FROM ${changeLogEntries('power_consumption')}${where}),
logged AS (${insertChangeLogFrom('log')} RETURNING 1),
dead AS (${insertDeadLetters(':dead_letters')}${where} RETURNING 1),
c AS MATERIALIZED (
  SELECT ${columnsOfRowData('l', extra)}, l.commit_lsn AS _lsn, l.op AS _op, u.valid AS _valid
  FROM unnest(:upsert_at::bigint[], :upsert_valid::boolean[]) AS u(at, valid) JOIN log l ON l.at = u.at),
ods_up AS (${insertOds('power_consumption', 'c', { upsert, extra })} RETURNING 1),${removals}
dwd_up AS (${insertDwdDetails('c', { where: 'c._valid', upsert, returning: `${DELTA_COLUMNS}, 1 AS n` })}),
deltas AS (${deltas} RETURNING stat_date, region_id),
delta_parts AS (${recordDeltaParts('deltas')})
SELECT ${atCheckpoint ? '(SELECT ok FROM gate) AS ok, ' : ''}(SELECT count(*) FROM logged)::int AS logged, (SELECT count(*) FROM dead)::int AS dead,
  (SELECT count(*) FROM ods_up)::int${removed('ods_del')} AS ods,
  (SELECT count(*) FROM dwd_up)::int${removed('dwd_del')} AS dwd,
  (SELECT count(*) FROM deltas)::int AS deltas`;
}

type BatchParam =
  ChangeLogParam | 'upsert_at' | 'upsert_valid' | 'deleted' | 'leaving' | 'touched' | 'dead_letters';
export type ConsumptionBatchParams = Record<BatchParam, unknown>;

type CheckpointParam = BatchParam | AdvanceParam | 'epoch' | 'first_lsn' | 'first_seq';

export const APPLY_CONSUMPTIONS = named<BatchParam>(applyConsumptionsSql(false, []));
export const APPLY_CONSUMPTIONS_AT_CHECKPOINT = named<CheckpointParam>(applyConsumptionsSql(true, []));

/**
 * The one-statement batch in its forms (see applyConsumptionsSql), for one list of extra ODS columns. `newKeys`
 * leaves the checkpoint to a statement after it (a batch written behind another, see PgBatchSink.applyBehind).
 */
export type ConsumptionStatements = {
  plain: Statement<BatchParam>;
  atCheckpoint: Statement<CheckpointParam>;
  newKeys: Statement<BatchParam>;
  newKeysAtCheckpoint: Statement<CheckpointParam>;
};

const WITHOUT_EXTRA_COLUMNS: ConsumptionStatements = {
  plain: APPLY_CONSUMPTIONS,
  atCheckpoint: APPLY_CONSUMPTIONS_AT_CHECKPOINT,
  newKeys: named(applyConsumptionsSql(false, [], true)),
  newKeysAtCheckpoint: named(applyConsumptionsSql(true, [], true)),
};
const withExtraColumns = new Map<string, ConsumptionStatements>();

/** The statements for the current ODS columns, compiled once per column list; no extra column: the constants. */
export function consumptionStatements(extra: readonly ExtraColumn[]): ConsumptionStatements {
  if (!extra.length) return WITHOUT_EXTRA_COLUMNS;
  const key = JSON.stringify(extra);
  let stmts = withExtraColumns.get(key);
  if (!stmts) {
    stmts = {
      plain: named(applyConsumptionsSql(false, extra)),
      atCheckpoint: named(applyConsumptionsSql(true, extra)),
      newKeys: named(applyConsumptionsSql(false, extra, true)),
      newKeysAtCheckpoint: named(applyConsumptionsSql(true, extra, true)),
    };
    withExtraColumns.set(key, stmts);
  }
  return stmts;
}
