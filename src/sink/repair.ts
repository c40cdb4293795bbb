/**
 * The sink side of `verify --repair`: source rows re-read for differing keys are written to ODS, DWD is derived
 * again from the sink's own ODS, and every write is recorded in stategrid_repair. A repair window is one sink
 * transaction that holds the checkpoint row like a batch, so it runs between two batches, never beside one; the
 * change log tells which keys the stream changed after the read's low watermark, and those are left to the stream.
 */
import type pg from 'pg';
import { withTransaction } from '../db/client';
import {
  CONSUMPTION_TABLE,
  SOURCE_TABLES,
  TABLE,
  USER_ENRICHMENT,
  USER_TABLE,
  type Column,
  type SourceTable,
} from '../schema/tables';
import { lockCheckpoint } from './checkpoint';
import { partitionKey, type Partition } from './partition';
import {
  detailsOfKeys,
  insertDwdDetails,
  insertDwdUsers,
  MARK_FOR_REBUILD,
  REENRICH_DETAILS_OF_USERS,
} from './dwd';
import { castColumns, insertOds, recordsetOf } from './ods';
import type { OdsExtras } from './ods-columns';
import { validRows } from './verify-sql';

export type RepairAction = 'inserted' | 'updated' | 'deleted' | 'recomputed' | 'skipped';
export type RepairRecord = { table: string; key: string; action: RepairAction };

/** One window: the keys to repair per source table, their source rows and the low watermark of that read. */
export type RepairWindow = {
  pipelineId: string;
  /** Epoch of the checkpoint when the window began: a re-snapshot since then voids the read. */
  epoch: string;
  verifyRunId: string;
  lowLsn: string;
  keys: Record<SourceTable, string[]>;
  /** Per table: JSON array of the source rows (text values), and the keys the source has. */
  source: Record<SourceTable, { rows: string; present: string[]; columns: string[] }>;
  /** ODS columns beyond the spec; those the source rows carry are written, the others keep their values. */
  extras: OdsExtras;
};

/** Keys of `table` (among $2) that a change at or after the low watermark $1 touched, by key or old key. */
const streamedKeys = (table: SourceTable) => `
SELECT DISTINCT k::text AS k FROM ods_change_log l,
  LATERAL (VALUES ((l.row_data ->> '${TABLE[table].key}')::bigint), ((l.old_key ->> '${TABLE[table].key}')::bigint)) v(k)
WHERE l.commit_lsn >= $1::pg_lsn AND l.table_name = '${table}' AND v.k = ANY($2::bigint[])`;

const TRUNCATED_SINCE = `
SELECT EXISTS (SELECT 1 FROM ods_change_log WHERE commit_lsn >= $1::pg_lsn AND op = 'T'
  AND $2 = ANY(string_to_array(table_name, ','))) AS truncated`;

/**
 * $1: JSON source rows, $2: keys the stream changed since the low watermark ($3), which keep the stream's state.
 * Rows already equal are left alone; written rows carry _lsn = the low watermark and _op = 'R' (read, not streamed).
 */
const upsertOdsRows = (table: SourceTable, extra: readonly Column[]) =>
  `${insertOds(
    table,
    `(SELECT * FROM jsonb_to_recordset($1::jsonb) AS ${recordsetOf(table, 'r', [], extra)}
      WHERE ${TABLE[table].key} <> ALL($2::bigint[])) r`,
    { lsn: '$3::pg_lsn', op: `'R'`, upsert: true, changedOnly: true, extra },
  )}
RETURNING ${TABLE[table].key}::text AS k, (xmax = 0) AS inserted`;

/** $1: keys to repair, $2: keys the source has, $3: keys the stream changed. */
const deleteOdsRows = (table: SourceTable) => `
DELETE FROM ${TABLE[table].ods} WHERE ${TABLE[table].key} = ANY($1::bigint[])
  AND ${TABLE[table].key} <> ALL($2::bigint[]) AND ${TABLE[table].key} <> ALL($3::bigint[])
RETURNING ${TABLE[table].key}::text AS k`;

/** Valid ODS rows of the keys $1, as text columns named like the source's. */
const validOds = (table: SourceTable) =>
  validRows(table, `${TABLE[table].ods} WHERE ${TABLE[table].key} = ANY($1::bigint[])`);

// DWD users of the keys $1 derived again from ODS: valid rows written where they differ, the others removed.
const DERIVE_DWD_USERS = insertDwdUsers(`${validOds('power_user')} v`, {
  select: castColumns('power_user'),
  upsert: true,
  changedOnly: true,
  returning: 'user_id::text AS k, (xmax = 0) AS inserted',
});
const DROP_INVALID_DWD_USERS = `
DELETE FROM ${USER_TABLE.dwd} WHERE user_id = ANY($1::bigint[])
  AND user_id NOT IN (SELECT user_id::bigint FROM ${validOds('power_user')} v)
RETURNING user_id::text AS k`;

// DWD details of the keys $1 derived again from ODS (enriched from the DWD users), the others removed.
const DERIVE_DWD_DETAILS = insertDwdDetails(`${validOds('power_consumption')} c`, {
  select: castColumns('power_consumption', 'c.'),
  userKey: 'c.user_id::bigint',
  upsert: true,
  changedOnly: true,
});
const DROP_INVALID_DWD_DETAILS = `
DELETE FROM ${CONSUMPTION_TABLE.dwd} WHERE consumption_id = ANY($1::bigint[])
  AND consumption_id NOT IN (SELECT consumption_id::bigint FROM ${validOds('power_consumption')} c)`;

// Each detail row of the consumptions $1 and of the users $2 with its partition and a hash of what verify compares.
const DETAIL_STATES = detailsOfKeys(
  `consumption_id::text AS k, consumption_date::date::text AS stat_date, region_id,
   md5(ROW(${[...CONSUMPTION_TABLE.columns.map((c) => c.name), ...USER_ENRICHMENT].join(', ')})::text) AS h`,
);
type DetailState = { k: string; stat_date: string; region_id: number | null; h: string };

const RECORD_REPAIRS = `
INSERT INTO stategrid_repair (verify_run_id, pipeline_id, table_name, record_key, action, low_lsn)
SELECT $1::bigint, $2, t, k, a, $3::pg_lsn FROM unnest($4::text[], $5::text[], $6::text[]) AS x(t, k, a)`;

/**
 * Applies one repair window in one sink transaction; returns what it wrote (also recorded) and the DWS partitions
 * whose DWD rows it changed (before and after), which the caller recomputes.
 */
export async function applyRepairWindow(
  pool: pg.Pool,
  w: RepairWindow,
): Promise<{ records: RepairRecord[]; partitions: Partition[] }> {
  return withTransaction(pool, async (client) => {
    // Between two batches: a batch holds this row until it commits, and waits for it while the repair writes.
    const cp = await lockCheckpoint(client, w.pipelineId);
    if (cp.epoch !== w.epoch || cp.phase !== 'streaming')
      throw new Error(`pipeline ${w.pipelineId} was re-snapshotted or stopped streaming during the repair`);
    const records: RepairRecord[] = [];
    for (const table of SOURCE_TABLES) records.push(...(await repairOds(client, w, table)));
    const { records: derived, partitions } = await deriveDwd(client, w.keys);
    records.push(...derived);
    // DWD changed without deltas: the per-user totals of these partitions must be rebuilt, even if we die now.
    await client.query(MARK_FOR_REBUILD, [
      partitions.map((p) => p.stat_date),
      partitions.map((p) => p.region_id),
    ]);
    await client.query(RECORD_REPAIRS, [
      w.verifyRunId,
      w.pipelineId,
      w.lowLsn,
      records.map((r) => r.table),
      records.map((r) => r.key),
      records.map((r) => r.action),
    ]);
    return { records, partitions };
  });
}

/** The source rows of a window written to one ODS table, except for keys the stream changed since the read. */
async function repairOds(
  client: pg.ClientBase,
  w: RepairWindow,
  table: SourceTable,
): Promise<RepairRecord[]> {
  const keys = w.keys[table];
  if (!keys.length) return [];
  const truncated = (await client.query(TRUNCATED_SINCE, [w.lowLsn, table])).rows[0].truncated as boolean;
  const streamed = truncated
    ? keys
    : (await client.query<{ k: string }>(streamedKeys(table), [w.lowLsn, keys])).rows.map((r) => r.k);
  const ods = TABLE[table].ods;
  // Only extra columns the source still has were read; a column dropped there keeps its ODS values.
  const read = w.source[table].columns;
  const extra = w.extras[table].filter((c) => read.includes(c.name));
  const upserted = await client.query<{ k: string; inserted: boolean }>(upsertOdsRows(table, extra), [
    w.source[table].rows,
    streamed,
    w.lowLsn,
  ]);
  const deleted = await client.query<{ k: string }>(deleteOdsRows(table), [
    keys,
    w.source[table].present,
    streamed,
  ]);
  return [
    ...upserted.rows.map((r): RepairRecord => ({
      table: ods,
      key: r.k,
      action: r.inserted ? 'inserted' : 'updated',
    })),
    ...deleted.rows.map((r): RepairRecord => ({ table: ods, key: r.k, action: 'deleted' })),
    ...streamed.map((k): RepairRecord => ({ table: ods, key: k, action: 'skipped' })),
  ];
}

/**
 * DWD of the window's keys derived again from the sink's ODS, as the batch path derives it: users, then details,
 * then the details of the users re-enriched. Detail changes are found by comparing each row before and after.
 */
async function deriveDwd(
  client: pg.ClientBase,
  keys: Record<SourceTable, string[]>,
): Promise<{ records: RepairRecord[]; partitions: Partition[] }> {
  const users = keys.power_user;
  const consumptions = keys.power_consumption;
  const states = async () =>
    new Map(
      (await client.query<DetailState>(DETAIL_STATES, [consumptions, users])).rows.map((r) => [r.k, r]),
    );
  const before = await states();
  const records: RepairRecord[] = [];
  if (users.length) {
    const up = await client.query<{ k: string; inserted: boolean }>(DERIVE_DWD_USERS, [users]);
    const gone = await client.query<{ k: string }>(DROP_INVALID_DWD_USERS, [users]);
    for (const r of up.rows)
      records.push({ table: USER_TABLE.dwd, key: r.k, action: r.inserted ? 'inserted' : 'updated' });
    for (const r of gone.rows) records.push({ table: USER_TABLE.dwd, key: r.k, action: 'deleted' });
  }
  if (consumptions.length) {
    await client.query(DERIVE_DWD_DETAILS, [consumptions]);
    await client.query(DROP_INVALID_DWD_DETAILS, [consumptions]);
  }
  if (users.length) await client.query(REENRICH_DETAILS_OF_USERS, [users]);
  const after = await states();
  const partitions = new Map<string, Partition>();
  const touch = (s: DetailState | undefined) => {
    if (!s || s.region_id === null) return;
    const p = { stat_date: s.stat_date, region_id: s.region_id };
    partitions.set(partitionKey(p), p);
  };
  for (const k of new Set([...before.keys(), ...after.keys()])) {
    const [b, a] = [before.get(k), after.get(k)];
    if (b?.h === a?.h) continue;
    records.push({
      table: CONSUMPTION_TABLE.dwd,
      key: k,
      action: !b ? 'inserted' : !a ? 'deleted' : 'updated',
    });
    touch(b);
    touch(a);
  }
  return { records, partitions: [...partitions.values()] };
}

/** Records the DWS partitions a repair recomputed, once per DWS table. */
export async function recordRecomputed(
  db: pg.ClientBase | pg.Pool,
  run: { verifyRunId: string; pipelineId: string },
  partitions: Partition[],
): Promise<RepairRecord[]> {
  const records = ['dws_region_daily_stats', 'dws_user_ranking'].flatMap((table) =>
    partitions.map((p): RepairRecord => ({
      table,
      key: partitionKey(p),
      action: 'recomputed',
    })),
  );
  await db.query(RECORD_REPAIRS, [
    run.verifyRunId,
    run.pipelineId,
    null,
    records.map((r) => r.table),
    records.map((r) => r.key),
    records.map((r) => r.action),
  ]);
  return records;
}

export type RepairCounts = Record<string, Partial<Record<RepairAction, number>>>;

/** Repairs per table and action of the pipeline's last repaired verify run (pipeline status). */
export async function lastRepair(
  db: pg.ClientBase,
  pipelineId: string,
): Promise<{ at: string; counts: RepairCounts } | null> {
  const { rows } = await db.query<{ at: string; table_name: string; action: RepairAction; n: number }>(
    `SELECT max(repaired_at)::text AS at, table_name, action, count(*)::int AS n FROM stategrid_repair
     WHERE pipeline_id = $1
       AND verify_run_id = (SELECT max(verify_run_id) FROM stategrid_repair WHERE pipeline_id = $1)
     GROUP BY table_name, action ORDER BY 1 DESC`,
    [pipelineId],
  );
  if (!rows.length) return null;
  const counts = countRepairs(rows.map((r) => ({ table: r.table_name, action: r.action, n: r.n })));
  return { at: rows[0].at, counts };
}

/** Repairs per table and action. */
export function countRepairs(records: { table: string; action: RepairAction; n?: number }[]): RepairCounts {
  const counts: RepairCounts = {};
  for (const r of records) {
    const t = (counts[r.table] ??= {});
    t[r.action] = (t[r.action] ?? 0) + (r.n ?? 1);
  }
  return counts;
}
