/**
 * What `stategrid verify` compares, as SQL over the source and the sink: for ODS and DWD, each table's rows as
 * (key, row text) on both sides, checksummed per chunk of keys so only differing chunks are read row by row; for
 * DWS, the semantics recomputed from DWD beside the DWS rows, differing (day, region) partitions counted.
 */
import type pg from 'pg';
import { quoteIdent } from '../db/sql';
import {
  CONSUMPTION_TABLE,
  SOURCE_TABLES,
  TABLE,
  USER_ENRICHMENT,
  USER_TABLE,
  type Column,
  type SourceTable,
} from '../schema/tables';
import { invalidReasonSql } from './snapshot-load';

export type VerifiedTable = {
  /** The sink table compared. */
  table: string;
  /** Rows as `k` (bigint key) and `r` (row text), on the source and on the sink. */
  source: string;
  sink: string;
};

const columns = (table: SourceTable) => TABLE[table].columns.map((c) => c.name);
const rowText = (cols: string[]) => `ROW(${cols.join(', ')})::text`;

/**
 * Rows of `from` (the source table, or the sink's ODS mirror with a condition) as text columns: validity is
 * decided on the same text forms as everywhere else.
 */
const asText = (table: SourceTable, from: string) =>
  `(SELECT ${columns(table)
    .map((c) => `${c}::text AS ${c}`)
    .join(', ')} FROM ${from})`;
export const validRows = (table: SourceTable, from: string = TABLE[table].name) =>
  `(SELECT * FROM ${asText(table, from)} t WHERE ${invalidReasonSql(table)} IS NULL)`;
const typed = (table: SourceTable, alias: string) =>
  TABLE[table].columns.map((c) => `${alias}.${c.name}::${c.type}`);

const DETAIL_COLUMNS = [...CONSUMPTION_TABLE.columns.map((c) => c.name), ...USER_ENRICHMENT];
const ENRICHMENT_TYPED = (alias: string) =>
  USER_ENRICHMENT.map((c) => `${alias}.${c}::${USER_TABLE.columns.find((u) => u.name === c)!.type}`);

/**
 * The ODS tables compared column by column: the spec's, then `extra` per table (source columns beyond the spec
 * that the ODS mirror has with the same type; the caller lists them in the same order for both sides).
 */
export function verifiedOdsTables(extra: Record<SourceTable, readonly Column[]>): VerifiedTable[] {
  return SOURCE_TABLES.map((t) => {
    const cols = [...columns(t), ...extra[t].map((c) => quoteIdent(c.name))];
    return {
      table: TABLE[t].ods,
      source: `SELECT ${TABLE[t].key} AS k, ${rowText(cols)} AS r FROM ${TABLE[t].name}`,
      sink: `SELECT ${TABLE[t].key} AS k, ${rowText(cols)} AS r FROM ${TABLE[t].ods}`,
    };
  });
}

export const VERIFIED_TABLES: Record<'ods' | 'dwd', VerifiedTable[]> = {
  ods: verifiedOdsTables({ power_user: [], power_consumption: [] }),
  dwd: [
    {
      table: USER_TABLE.dwd,
      source: `SELECT u.user_id::bigint AS k, ${rowText(typed('power_user', 'u'))} AS r FROM ${validRows('power_user')} u`,
      sink: `SELECT user_id AS k, ${rowText(columns('power_user'))} AS r FROM ${USER_TABLE.dwd}`,
    },
    {
      table: CONSUMPTION_TABLE.dwd,
      source: `SELECT c.consumption_id::bigint AS k,
        ${rowText([...typed('power_consumption', 'c'), ...ENRICHMENT_TYPED('u')])} AS r
        FROM ${validRows('power_consumption')} c LEFT JOIN ${validRows('power_user')} u ON u.user_id = c.user_id`,
      sink: `SELECT consumption_id AS k, ${rowText(DETAIL_COLUMNS)} AS r FROM ${CONSUMPTION_TABLE.dwd}`,
    },
  ],
};

export type ChunkSum = { chunk: string; rows: number; sum: string };

/**
 * Row count and an order-independent checksum (sum of 64-bit row hashes) per chunk of `chunkKeys` keys.
 * `hashtextextended` is PostgreSQL's own text hash (a fraction of md5's cost per row); should two servers ever
 * hash differently (it is not specified across architectures), every chunk differs and the drill-down, by md5 per
 * row, still tells equal rows from different ones: slower, never a wrong verdict.
 */
export async function chunkChecksums(
  db: pg.ClientBase,
  rows: string,
  chunkKeys: number,
): Promise<ChunkSum[]> {
  const { rows: sums } = await db.query<ChunkSum>(
    `SELECT (k / $1)::text AS chunk, count(*)::int AS rows, sum(hashtextextended(r, 0))::text AS sum
     FROM (${rows}) x GROUP BY 1`,
    [chunkKeys],
  );
  return sums;
}

/** Each row's key and hash in the given chunks: the drill-down of chunks whose checksums differ. */
export async function rowHashes(
  db: pg.ClientBase,
  rows: string,
  chunkKeys: number,
  chunks: string[],
): Promise<Map<string, string>> {
  const { rows: hashed } = await db.query<{ k: string; h: string }>(
    `SELECT k::text AS k, md5(r) AS h FROM (${rows}) x WHERE (k / $1) = ANY($2::bigint[])`,
    [chunkKeys, chunks],
  );
  return new Map(hashed.map((h) => [h.k, h.h]));
}

/**
 * DWS partitions whose rows differ from the semantics recomputed from DWD: region stats by (day, region) with
 * exact sums, distinct users and max; the ranking by day and region, ties by user_id. Both from one grouping of
 * the detail rows per user and day (`per_user`; sums of its sums and the max of its maxes are the group's, and it
 * holds each user of a group at least once): DWD is read once, not once per table. `days` limits the check.
 * A partition with a pending dirty mark or delta is in flight, not different: a batch changed its DWD rows and the
 * next refresh brings them in. Read in the same statement, a partition without either has been refreshed after
 * its last DWD change (a batch writes its deltas or marks in the transaction of its DWD rows; a refresh deletes
 * the deltas it applies in its transaction and drops only marks unchanged since it read them), so its DWS rows
 * must equal DWD even while the pipeline streams.
 */
export async function differingDwsPartitions(
  db: pg.ClientBase,
  days: string[] | null,
): Promise<{ table: string; stat_date: string; region_id: number; rows: number }[]> {
  const dayFilter = days ? 'AND consumption_date::date = ANY($1::date[])' : '';
  const dwsDayFilter = days ? 'WHERE stat_date = ANY($1::date[])' : '';
  const detail = `SELECT * FROM ${CONSUMPTION_TABLE.dwd} WHERE region_id IS NOT NULL ${dayFilter}`;
  const { rows } = await db.query(
    `WITH per_user AS MATERIALIZED (
       SELECT consumption_date::date AS stat_date, user_id, user_name, region_id, region_name,
         sum(consumption_amount) AS total_consumption, sum(consumption_cost) AS total_cost,
         max(consumption_amount) AS max_consumption
       FROM (${detail}) d GROUP BY 1, 2, 3, 4, 5),
     stats_expected AS (
       SELECT region_id, region_name, stat_date, sum(total_consumption) AS total_consumption,
         sum(total_cost) AS total_cost, count(DISTINCT user_id) AS user_count,
         max(max_consumption) AS max_consumption
       FROM per_user GROUP BY 1, 2, 3),
     stats_actual AS (
       SELECT region_id, region_name, stat_date, total_consumption, total_cost, user_count, max_consumption
       FROM dws_region_daily_stats ${dwsDayFilter}),
     ranking_expected AS (
       SELECT stat_date, user_id, user_name, region_id, region_name, total_consumption, total_cost,
         row_number() OVER (PARTITION BY stat_date, region_id ORDER BY total_consumption DESC, user_id) AS ranking
       FROM per_user),
     ranking_actual AS (
       SELECT stat_date, user_id, user_name, region_id, region_name, total_consumption, total_cost, ranking
       FROM dws_user_ranking ${dwsDayFilter}),
     differing AS (
       SELECT 'dws_region_daily_stats' AS t, stat_date, region_id FROM (
         (SELECT * FROM stats_expected EXCEPT ALL SELECT * FROM stats_actual)
         UNION ALL (SELECT * FROM stats_actual EXCEPT ALL SELECT * FROM stats_expected)) s
       UNION ALL
       SELECT 'dws_user_ranking', stat_date, region_id FROM (
         (SELECT * FROM ranking_expected EXCEPT ALL SELECT * FROM ranking_actual)
         UNION ALL (SELECT * FROM ranking_actual EXCEPT ALL SELECT * FROM ranking_expected)) r)
     SELECT t AS table, stat_date::text, region_id, count(*)::int AS rows FROM differing d
     WHERE NOT EXISTS (SELECT 1 FROM stategrid_dws_dirty m WHERE m.stat_date = d.stat_date AND m.region_id = d.region_id)
       AND NOT EXISTS (SELECT 1 FROM stategrid_dws_delta m WHERE m.stat_date = d.stat_date AND m.region_id = d.region_id)
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
    days ? [days] : [],
  );
  return rows;
}

export type VerifyRun = {
  finished_at: string;
  equal: boolean;
  /** Differing keys or partitions per sink table. */
  mismatched: Record<string, number>;
  seconds: string;
};

/** Records a verify run; returns its id (repairs refer to the run that found what they repaired). */
export async function recordVerifyRun(
  db: pg.ClientBase,
  pipelineId: string,
  run: { equal: boolean; mismatched: Record<string, number>; seconds: number },
): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO stategrid_verify_run (pipeline_id, equal, mismatched, seconds) VALUES ($1, $2, $3, $4)
     RETURNING id::text`,
    [pipelineId, run.equal, JSON.stringify(run.mismatched), run.seconds],
  );
  return rows[0].id;
}

export async function lastVerifyRun(db: pg.ClientBase, pipelineId: string): Promise<VerifyRun | null> {
  const { rows } = await db.query<VerifyRun>(
    `SELECT finished_at::text, equal, mismatched, seconds::text FROM stategrid_verify_run
     WHERE pipeline_id = $1 ORDER BY id DESC LIMIT 1`,
    [pipelineId],
  );
  return rows[0] ?? null;
}
