/**
 * Schema evolution on the sink: source columns beyond the table spec become columns of the ODS mirrors. The spec
 * columns are fixed (sql/03_sink.sql); extra ones are found at run time, added with the source's type, and
 * recorded with their state in stategrid_ods_column, which the writers read to know what to write. The decisions
 * are src/schema/evolution.ts; this module carries them out and reads the catalogs.
 */
import type pg from 'pg';
import { quoteIdent, quoteLiteral } from '../db/sql';
import {
  describeStep,
  mirrorableType,
  planColumns,
  UNFILLED,
  type ColumnState,
  type ColumnStep,
  type SourceColumn,
  type TrackedColumn,
} from '../schema/evolution';
import { SOURCE_TABLES, TABLE, type Column, type SourceTable } from '../schema/tables';

/**
 * A column beyond the spec an ODS table is written with, with its ODS type; `mirrored`: the source still has it
 * (otherwise it was dropped there, and rows written since get NULL).
 */
export type ExtraColumn = Column & { mirrored: boolean };

/** The extra columns each ODS table is written with. */
export type OdsExtras = Record<SourceTable, readonly ExtraColumn[]>;

/** Where column changes are reported (the worker log). */
export type ColumnLog = (level: 'info' | 'warn', message: string, fields: Record<string, unknown>) => void;

export const noColumnLog: ColumnLog = () => undefined;

const ODS_OF = `(VALUES ${SOURCE_TABLES.map((t) => `('${t}', '${TABLE[t].ods}'::regclass)`).join(', ')}) AS o(table_name, ods)`;

// Tracked columns the ODS table really has with the recorded type: a column removed or retyped in ODS by hand is
// not written (better a missing column than a batch that can never commit).
const WRITTEN_COLUMNS = `
SELECT t.table_name, t.column_name AS name, t.column_type AS type, t.state = 'mirrored' AS mirrored
FROM stategrid_ods_column t JOIN ${ODS_OF} USING (table_name)
JOIN pg_attribute a ON a.attrelid = o.ods AND a.attname = t.column_name AND a.attnum > 0 AND NOT a.attisdropped
WHERE t.state <> 'skipped' AND format_type(a.atttypid, a.atttypmod) = t.column_type
ORDER BY t.table_name, t.column_name`;

/** The extra columns the writers put into each ODS table. One query; read once per capture segment or snapshot. */
export async function readOdsExtras(db: pg.ClientBase | pg.Pool): Promise<OdsExtras> {
  const { rows } = await db.query<{ table_name: SourceTable } & ExtraColumn>(WRITTEN_COLUMNS);
  const extras: Record<SourceTable, ExtraColumn[]> = { power_user: [], power_consumption: [] };
  for (const r of rows) {
    const inSpec = TABLE[r.table_name].columns.some((c) => c.name === r.name);
    if (!inSpec && mirrorableType(r.type))
      extras[r.table_name].push({ name: r.name, type: r.type, mirrored: r.mirrored });
  }
  return extras;
}

export type CatalogColumn = SourceColumn & { type: string; notNull: boolean };

/** The columns of a table in the current database, in order, as format_type prints their types. */
export async function catalogColumns(db: pg.ClientBase | pg.Pool, table: string): Promise<CatalogColumn[]> {
  const { rows } = await db.query<CatalogColumn>(
    `SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type, attnotnull AS "notNull"
     FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [quoteIdent(table)],
  );
  return rows;
}

export type OdsColumnReport = TrackedColumn & { table: SourceTable; changedAt: string };

/** Everything recorded about columns beyond the spec (status shows it). */
export async function odsColumnReport(db: pg.ClientBase): Promise<OdsColumnReport[]> {
  const { rows } = await db.query<OdsColumnReport>(
    `SELECT table_name AS table, column_name AS name, column_type AS type, state, detail,
       changed_at::text AS "changedAt"
     FROM stategrid_ods_column ORDER BY table_name, column_name`,
  );
  return rows;
}

/** Mirrored columns whose older rows still wait for the values the source wrote into them (UNFILLED). */
const IS_UNFILLED = `state = 'mirrored' AND detail = ${quoteLiteral(UNFILLED)}`;

/** How many columns are unfilled, as a subquery of a status read. */
export const UNFILLED_COLUMNS = `(SELECT count(*) FROM stategrid_ods_column WHERE ${IS_UNFILLED})::int AS unfilled_columns`;

/** The sink's clock now, as text: when a comparison began, for markColumnsFilled. */
export async function sinkClock(db: pg.ClientBase): Promise<string> {
  return (await db.query<{ t: string }>('SELECT now()::text AS t')).rows[0].t;
}

/**
 * After a comparison found ODS equal to its source: the columns marked unfilled before it began (`since`, the sink's
 * clock) hold every value now.
 */
export async function markColumnsFilled(db: pg.ClientBase, since: string): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE stategrid_ods_column SET detail = 'filled: verify found ODS equal to its source', changed_at = now()
     WHERE ${IS_UNFILLED} AND changed_at <= $1::timestamptz`,
    [since],
  );
  return rowCount ?? 0;
}

async function trackedColumns(db: pg.ClientBase, table: SourceTable): Promise<TrackedColumn[]> {
  const { rows } = await db.query<TrackedColumn>(
    `SELECT column_name AS name, column_type AS type, state, detail FROM stategrid_ods_column
     WHERE table_name = $1`,
    [table],
  );
  return rows;
}

const TRACK = `
INSERT INTO stategrid_ods_column (table_name, column_name, column_type, state, detail)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (table_name, column_name) DO UPDATE SET
  column_type = coalesce(EXCLUDED.column_type, stategrid_ods_column.column_type),
  state = EXCLUDED.state, detail = EXCLUDED.detail, changed_at = now()`;

const STATE_AFTER: Record<ColumnStep['action'], ColumnState> = {
  add: 'mirrored',
  mirror: 'mirrored',
  drop: 'dropped',
  skip: 'skipped',
};

/**
 * Brings `table`'s ODS mirror in line with the source columns `reported`, inside the caller's transaction (the
 * batch's, so the new columns, their rows and the checkpoint commit together). DDL runs under a savepoint: a
 * column PostgreSQL refuses (a type the sink lacks, no ownership of the ODS table) is recorded as skipped and
 * logged, and the batch goes on.
 */
export async function evolveOdsColumns(
  client: pg.ClientBase,
  table: SourceTable,
  reported: readonly SourceColumn[],
  log: ColumnLog,
): Promise<void> {
  const spec = TABLE[table];
  const ods = new Map((await catalogColumns(client, spec.ods)).map((c) => [c.name, c]));
  const steps = planColumns(spec, reported, await trackedColumns(client, table), ods);
  for (const planned of steps) {
    const step = await carryOut(client, spec.ods, planned);
    const unfilled = step.action === 'add' && !!step.unfilled;
    const detail =
      step.action === 'skip' || step.action === 'mirror' ? step.detail : unfilled ? UNFILLED : null;
    await client.query(TRACK, [table, step.name, step.type, STATE_AFTER[step.action], detail]);
    const quiet = (step.action === 'add' && !unfilled) || step.action === 'mirror';
    log(quiet ? 'info' : 'warn', describeStep(table, spec.ods, step), {
      table,
      column: step.name,
      type: step.type,
      state: STATE_AFTER[step.action],
    });
  }
}

async function carryOut(client: pg.ClientBase, ods: string, step: ColumnStep): Promise<ColumnStep> {
  const target = `ALTER TABLE ${quoteIdent(ods)}`;
  if (step.action === 'add') {
    // step.type passed mirrorableType: plain format_type text, safe to write into DDL. A constant default fills the
    // rows ODS holds without rewriting them (as at the source); rows written from now on carry their own value.
    const column = quoteIdent(step.name);
    const drop = step.replace ? `${target} DROP COLUMN IF EXISTS ${column}; ` : '';
    const add = `${drop}${target} ADD COLUMN IF NOT EXISTS ${column} ${step.type}`;
    if (step.missing !== null) {
      const withDefault = `${add} DEFAULT ${quoteLiteral(step.missing)}::${step.type}`;
      if (!(await inSavepoint(client, `${withDefault}; ${target} ALTER COLUMN ${column} DROP DEFAULT`)))
        return step;
      // A default the sink cannot read back: the column is mirrored all the same, its older rows NULL.
    }
    const failed = await inSavepoint(client, add);
    if (failed) return { action: 'skip', name: step.name, type: step.type, detail: failed };
    return { ...step, missing: null };
  }
  if (step.action === 'drop' && step.dropNotNull) {
    const failed = await inSavepoint(client, `${target} ALTER COLUMN ${quoteIdent(step.name)} DROP NOT NULL`);
    if (failed) return { action: 'skip', name: step.name, type: step.type, detail: failed };
  }
  return step;
}

/** Runs one DDL statement so that its failure leaves the transaction usable; returns the error text or null. */
async function inSavepoint(client: pg.ClientBase, sql: string): Promise<string | null> {
  await client.query('SAVEPOINT stategrid_ods_column');
  try {
    await client.query(sql);
    await client.query('RELEASE SAVEPOINT stategrid_ods_column');
    return null;
  } catch (err) {
    await client.query('ROLLBACK TO SAVEPOINT stategrid_ods_column');
    return `PostgreSQL refused it: ${(err as Error).message}`;
  }
}
