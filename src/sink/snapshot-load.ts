/**
 * Snapshot load: source rows arrive by COPY, as text, in a session temp table (no WAL, never decoded by the
 * walsender); ODS, dead letters, DWD and the DWS dirty marks are then derived set-based from it, with SQL built
 * from the table spec. Validity is the same rule as src/cdc/validate.ts, written on the same text forms
 * (test/integration/validation-sql.test.ts checks they agree on random rows).
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { LoadedChunk, PlannedChunkRef, SnapshotSink, StagedChunk } from '../cdc/ports';
import { withTransaction } from '../db/client';
import { quoteIdent } from '../db/sql';
import type { SourceColumn } from '../schema/evolution';
import { TABLE, type Column, type SourceTable } from '../schema/tables';
import { buildMissingIndexes, dropIndexesForBulkLoad } from './bulk-load-indexes';
import { addSnapshotProgress, finishSnapshot, lockCheckpoint, resetCheckpoint } from './checkpoint';
import { insertDwdDetails, insertDwdUsers, markDirty } from './dwd';
import { castColumns, insertOds } from './ods';
import { evolveOdsColumns, noColumnLog, readOdsExtras, type ColumnLog } from './ods-columns';
import { CLEAR_FOR_SNAPSHOT } from './ops';
import { chunkLoaded, claimChunk } from './snapshot-chunks';

/** Column lists in source order; staging holds them as text, exactly as the row path sees them. */
export const SNAPSHOT_COLUMNS: Record<SourceTable, string[]> = {
  power_user: TABLE.power_user.columns.map((c) => c.name),
  power_consumption: TABLE.power_consumption.columns.map((c) => c.name),
};

/**
 * The session's staging table for a table's chunks; with extra source columns (`extra`, staged as text after the
 * spec's) its name carries a digest of them, since a session keeps its temp tables from one snapshot to the next.
 */
export const stagingTable = (table: SourceTable, extra: readonly Column[] = []) =>
  `stategrid_stage_${table}` +
  (extra.length ? `_${createHash('md5').update(JSON.stringify(extra)).digest('hex').slice(0, 12)}` : '');

export const CREATE_STAGING = (table: SourceTable, extra: readonly Column[] = []) =>
  `CREATE TEMP TABLE IF NOT EXISTS ${stagingTable(table, extra)} (${[
    ...SNAPSHOT_COLUMNS[table],
    ...extra.map((c) => quoteIdent(c.name)),
  ]
    .map((c) => `${c} text`)
    .join(', ')}) ON COMMIT DELETE ROWS`;

const COPY_INTO_STAGING = (table: SourceTable, extra: readonly Column[]) =>
  `COPY ${stagingTable(table, extra)} FROM STDIN`;

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

/** SQL of the reason a row of text columns named like the source's is invalid, or NULL (also used by verify). */
export const invalidReasonSql = (table: SourceTable) => REASON[table];

/** The staged rows with their invalid reason; exported for the test that compares it with validate.ts. */
export const STAGED_WITH_REASON = (table: SourceTable, extra: readonly Column[] = []) =>
  `SELECT s.*, ${REASON[table]} AS reason FROM ${stagingTable(table, extra)} s`;

/**
 * ODS and dead letters of the staged chunk; DWD and the DWS marks differ per table. A dead letter's raw row is
 * the staged row (every copied column, as text), like the change's row on the streaming path.
 */
const loadCommon = (
  table: SourceTable,
  extra: readonly Column[],
) => `staged AS MATERIALIZED (${STAGED_WITH_REASON(table, extra)}),
ods AS (${insertOds(table, 'staged', { select: castColumns(table), lsn: '$1::pg_lsn', op: `'R'`, upsert: false, extra })}
  RETURNING 1),
dead AS (
  INSERT INTO stategrid_dead_letter (table_name, record_key, raw_row, reason, lsn, seq)
  SELECT '${table}', ${TABLE[table].key}, to_jsonb(staged) - 'reason', reason, $1::pg_lsn, NULL
  FROM staged WHERE reason IS NOT NULL
  RETURNING 1)`;

/** $1: snapshot LSN. Loads ODS, dead letters and DWD for the staged chunk; returns counts, days and max event. */
const LOAD_STAGED: Record<SourceTable, (extra: readonly Column[]) => string> = {
  power_user: (extra) => `
WITH ${loadCommon('power_user', extra)},
dwd AS (${insertDwdUsers('staged WHERE reason IS NULL', { select: castColumns('power_user'), upsert: false })}
  RETURNING 1)
SELECT (SELECT count(*) FROM ods)::int AS rows, (SELECT count(*) FROM dead)::int AS dead_letters,
  '{}'::text[] AS days, NULL::text AS max_event_time`,

  power_consumption: (extra) => `
WITH ${loadCommon('power_consumption', extra)},
dwd AS (${insertDwdDetails('staged c', {
    select: castColumns('power_consumption', 'c.'),
    userKey: 'c.user_id::bigint',
    where: 'c.reason IS NULL',
    upsert: false,
    returning: 'consumption_date, region_id',
  })}),
dirty AS (${markDirty('SELECT * FROM dwd')} RETURNING 1)
SELECT (SELECT count(*) FROM ods)::int AS rows, (SELECT count(*) FROM dead)::int AS dead_letters,
  (SELECT array_agg(DISTINCT consumption_date::date::text) FROM dwd) AS days,
  (SELECT max(consumption_date)::text FROM dwd) AS max_event_time,
  (SELECT count(*) FROM dirty)::int AS dirty_partitions`,
};

/** Size and last key of the staged chunk: where the next COPY starts. */
const STAGED_RANGE = (table: SourceTable, extra: readonly Column[]) =>
  `SELECT count(*)::int AS rows, max(${TABLE[table].key}::bigint)::text AS last_key FROM ${stagingTable(table, extra)}`;

const EMPTY_CHUNK: LoadedChunk = { rows: 0, deadLetters: 0, days: [], maxEventTime: null };

/** The snapshot side of the sink for one pipeline: each chunk in its own sink session and transaction. */
export class PgSnapshotSink implements SnapshotSink {
  private epoch = '';
  /** Per table, the source columns beyond the spec that the chunks carry (set by prepareTable). */
  private readonly extras: Record<SourceTable, readonly Column[]> = { power_user: [], power_consumption: [] };

  constructor(
    private readonly pool: pg.Pool,
    private readonly pipelineId: string,
    private readonly log: ColumnLog = noColumnLog,
  ) {}

  async begin(): Promise<string> {
    this.epoch = await withTransaction(this.pool, async (client) => {
      await lockCheckpoint(client, this.pipelineId);
      await dropIndexesForBulkLoad(client);
      for (const sql of CLEAR_FOR_SNAPSHOT) await client.query(sql);
      return resetCheckpoint(client, this.pipelineId, 'snapshot');
    });
    return this.epoch;
  }

  /**
   * Joins a snapshot another worker began (a fanned-out chunk): its epoch, and the extra columns its plan gives a
   * table's chunks (the ODS mirror has them already).
   */
  async join(epoch: string, columns: Partial<Record<SourceTable, readonly string[]>>): Promise<void> {
    this.epoch = epoch;
    const extras = await readOdsExtras(this.pool);
    for (const table of Object.keys(columns) as SourceTable[])
      this.extras[table] = extras[table].filter((c) => columns[table]!.includes(c.name));
  }

  /**
   * Adds the table's source columns beyond the spec to its ODS mirror (or records why not, and which mirrored ones
   * are gone); the chunks then carry the spec columns and the mirrored extra ones, in the returned order.
   */
  async prepareTable(table: SourceTable, source: SourceColumn[]): Promise<string[]> {
    // The chunks copy every row's value: a default written into the source's rows is filled here too.
    const copied = source.map((c) => ({ ...c, defaultInRows: false }));
    await withTransaction(this.pool, (client) => evolveOdsColumns(client, table, copied, this.log));
    const atSource = new Set(source.map((c) => c.name));
    this.extras[table] = (await readOdsExtras(this.pool))[table].filter((c) => atSource.has(c.name));
    return [...SNAPSHOT_COLUMNS[table], ...this.extras[table].map((c) => c.name)];
  }

  loadChunk(
    table: SourceTable,
    snapshotLsn: string,
    copyOut: () => NodeJS.ReadableStream,
    staged: (chunk: StagedChunk) => void,
    planned?: PlannedChunkRef,
  ): Promise<LoadedChunk | null> {
    const extra = this.extras[table];
    return withTransaction(this.pool, async (client) => {
      if (planned && !(await claimChunk(client, this.pipelineId, planned))) {
        staged({ rows: 0, lastKey: null });
        return null; // another attempt loaded it: nothing to do
      }
      await client.query(CREATE_STAGING(table, extra));
      await pipeline(copyOut(), client.query(copyFrom(COPY_INTO_STAGING(table, extra))));
      const range = (
        await client.query<{ rows: number; last_key: string | null }>(STAGED_RANGE(table, extra))
      ).rows[0];
      staged({ rows: range.rows, lastKey: range.last_key });
      if (!range.rows) {
        if (planned) await chunkLoaded(client, this.pipelineId, planned, EMPTY_CHUNK);
        return null;
      }
      const { rows } = await client.query(LOAD_STAGED[table](extra), [snapshotLsn]);
      this.guard(await addSnapshotProgress(client, this.pipelineId, this.epoch, rows[0].rows));
      const loaded = {
        rows: rows[0].rows,
        deadLetters: rows[0].dead_letters,
        days: rows[0].days ?? [],
        maxEventTime: rows[0].max_event_time,
      };
      if (planned) await chunkLoaded(client, this.pipelineId, planned, loaded);
      return loaded;
    });
  }

  async finish(consistentLsn: string, rows: number, maxEventTime: string | null): Promise<void> {
    await withTransaction(this.pool, async (client) => {
      await lockCheckpoint(client, this.pipelineId);
      await buildMissingIndexes(client);
      this.guard(
        await finishSnapshot(client, this.pipelineId, this.epoch, { lsn: consistentLsn, rows, maxEventTime }),
      );
    });
  }

  private guard(current: boolean) {
    if (!current) throw new Error(`snapshot of pipeline ${this.pipelineId} was superseded by a newer one`);
  }
}
