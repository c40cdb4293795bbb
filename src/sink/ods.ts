/**
 * ODS layer SQL, built from the table spec: the current-state mirror of each source table (plus _lsn, _op,
 * _synced_at) and the append-only change log. Source columns beyond the spec (`extra`, see ods-columns.ts) are
 * read as text, which every type's input accepts, and cast to their ODS type on insert.
 */
import { named, quoteIdent, quoteLiteral } from '../db/sql';
import {
  ODS_METADATA,
  SOURCE_TABLES,
  TABLE,
  UNSENT_METADATA,
  type Column,
  type SourceTable,
} from '../schema/tables';
import type { ExtraColumn } from './ods-columns';

const names = (cols: readonly Column[]) => cols.map((c) => c.name).join(', ');

/** `AS alias(col type, ...)` of a jsonb_to_recordset over a table's rows: spec columns, source extras, `meta`. */
export function recordsetOf(
  table: SourceTable,
  alias: string,
  meta: readonly Column[] = [],
  extra: readonly Column[] = [],
): string {
  const asText = extra.map((c) => ({ name: quoteIdent(c.name), type: 'text' }));
  const cols = [...TABLE[table].columns, ...asText, ...meta];
  return `${alias}(${cols.map((c) => `${c.name} ${c.type}`).join(', ')})`;
}

/** Each source column read as its spec type from a text staging column (the snapshot stages COPY text). */
export const castColumns = (table: SourceTable, alias = '') =>
  TABLE[table].columns.map((c) => `${alias}${c.name}::${c.type}`).join(', ');

/** `SET col = EXCLUDED.col, ...` for every non-key column in `cols`. */
export function updateFromExcluded(key: string, cols: readonly string[]): string {
  return cols
    .filter((c) => c !== key)
    .map((c) => `${c} = EXCLUDED.${c}`)
    .join(', ');
}

/** `WHERE` of an upsert that leaves a row alone when `cols` of `target` already hold the new values (repair). */
export function unlessUnchanged(target: string, cols: readonly string[]): string {
  return ` WHERE (${cols.map((c) => `${target}.${c}`).join(', ')}) IS DISTINCT FROM (${cols
    .map((c) => `EXCLUDED.${c}`)
    .join(', ')})`;
}

/**
 * The text an upsert writes into the extra column `c`: `value`, unless `unsent` holds (the source left the value
 * out: an update does not send a TOASTed value it left unchanged); then the ODS row at `key` (the row's key
 * before the batch) keeps its own. A column dropped at the source has none to keep: its value (NULL) is written.
 */
export function sentOrKept(
  table: SourceTable,
  c: ExtraColumn,
  value: string,
  unsent: string,
  key: string,
): string {
  if (!c.mirrored) return value;
  const spec = TABLE[table];
  return `CASE WHEN ${unsent} THEN (SELECT k.${quoteIdent(c.name)}::text FROM ${spec.ods} k WHERE k.${spec.key} = ${key}) ELSE ${value} END`;
}

/** The key expression of sentOrKept from a key in text (both tables' keys are bigint, as deleteOds takes them). */
export const odsKeyOf = (text: string) => `(${text})::bigint`;

/**
 * Writes rows into a table's ODS mirror. `select` gives the source columns (plain names, or casts from staged
 * text), `lsn` and `op` the metadata expressions; `extra` the source columns beyond the spec, each taken from the
 * text column of its name (or what `extraValue` makes of it) and cast to its ODS type; `upsert` replaces an
 * existing row of the same key, `changedOnly` only when a source column differs.
 */
export function insertOds(
  table: SourceTable,
  from: string,
  opts: {
    select?: string;
    lsn?: string;
    op?: string;
    upsert: boolean;
    changedOnly?: boolean;
    extra?: readonly Column[];
    extraValue?: (i: number, text: string) => string;
  },
): string {
  const spec = TABLE[table];
  const extra = opts.extra ?? [];
  const extraNames = extra.map((c) => quoteIdent(c.name));
  const cols = [...spec.columns.map((c) => c.name), ...extraNames, ...ODS_METADATA.map((c) => c.name)];
  const conflict = opts.upsert
    ? `\nON CONFLICT (${spec.key}) DO UPDATE SET ${updateFromExcluded(spec.key, [...cols, '_synced_at'])}${
        opts.changedOnly ? unlessUnchanged(spec.ods, [...spec.columns.map((c) => c.name), ...extraNames]) : ''
      }`
    : '';
  const valueOf = opts.extraValue ?? ((_i: number, text: string) => text);
  const extraValues = extra.map((c, i) => `, (${valueOf(i, extraNames[i])})::${c.type}`).join('');
  return `INSERT INTO ${spec.ods} (${cols.join(', ')}, _synced_at)
SELECT ${opts.select ?? names(spec.columns)}${extraValues}, ${opts.lsn ?? '_lsn'}, ${opts.op ?? '_op'}, now() FROM ${from}${conflict}`;
}

/**
 * $1: JSON array of rows, each with _lsn and _op; an updated row whose source left values out of mirrored extra
 * columns names them in _unsent, and the key of the ODS row that holds them in _ods_key (its own when absent).
 */
export function upsertOdsFromJson(table: SourceTable, extra: readonly ExtraColumn[] = []): string {
  const keeps = extra.some((c) => c.mirrored);
  const meta = keeps ? [...ODS_METADATA, ...UNSENT_METADATA] : ODS_METADATA;
  const key = odsKeyOf(`coalesce(r._ods_key, r.${TABLE[table].key}::text)`);
  return insertOds(table, `jsonb_to_recordset($1::jsonb) AS ${recordsetOf(table, 'r', meta, extra)}`, {
    upsert: true,
    extra,
    extraValue: keeps
      ? (i, text) => sentOrKept(table, extra[i], text, `${quoteLiteral(extra[i].name)} = ANY(r._unsent)`, key)
      : undefined,
  });
}

/** $1: bigint[] of keys. */
export const deleteOds = (table: SourceTable) =>
  `DELETE FROM ${TABLE[table].ods} WHERE ${TABLE[table].key} = ANY($1::bigint[])`;
export const emptyOds = (table: SourceTable) => `DELETE FROM ${TABLE[table].ods}`;

const CHANGE_LOG_COLUMNS = 'commit_lsn, seq, table_name, op, row_data, old_key, commit_time';

/** The parameters of changeLogEntries for changes to one table; changes to several take `tables` too. */
export type ChangeLogParam = 'rows' | 'seqs' | 'ops' | 'old_keys' | 'txs' | 'tx_lsns' | 'tx_times';

/**
 * The change log entries of a run of changes from parallel parameters, as recordset `x` with the change log's
 * columns and each entry's 1-based place `at`: :rows (JSON array of the rows; a truncate's is {"tables": [...]}),
 * :seqs (int[]), :ops (text[]), :old_keys (text[] of old primary keys; null when no change has one), :txs (each
 * change's transaction as a 1-based place in :tx_lsns (pg_lsn[]) and :tx_times (timestamptz[])) and, unless every
 * change is to `table`, :tables (text[]: each change's table; a truncate's tables joined by commas). Cheaper than
 * one JSON array of entry objects: PostgreSQL 15 lexes JSON a character at a time and sorts the keys of every
 * object (1.6 us per row of the streaming batch statement).
 */
export const changeLogEntries = (table?: SourceTable) => {
  const keyName = table
    ? quoteLiteral(TABLE[table].key)
    : `CASE r.table_name ${SOURCE_TABLES.map((t) => `WHEN ${quoteLiteral(t)} THEN ${quoteLiteral(TABLE[t].key)}`).join(' ')} END`;
  return `(
  SELECT (:tx_lsns::pg_lsn[])[r.tx] AS commit_lsn, r.seq, ${table ? `${quoteLiteral(table)}::text` : 'r.table_name'} AS table_name,
    r.op::char(1) AS op, r.row_data,
    CASE WHEN r.old_key IS NOT NULL THEN jsonb_build_object(${keyName}, r.old_key) END AS old_key,
    (:tx_times::timestamptz[])[r.tx] AS commit_time, r.at
  FROM ROWS FROM (jsonb_array_elements(:rows::jsonb), unnest(:seqs::int[]), unnest(:ops::text[]),
    unnest(:old_keys::text[]), unnest(:txs::int[])${table ? '' : ', unnest(:tables::text[])'}) WITH ORDINALITY
    AS r(row_data, seq, op, old_key, tx, ${table ? '' : 'table_name, '}at)) x`;
};

/** Appends the change log entries `from` selects (the columns of changeLogEntries). */
export const insertChangeLogFrom = (from: string) => `
INSERT INTO ods_change_log (${CHANGE_LOG_COLUMNS})
SELECT ${CHANGE_LOG_COLUMNS} FROM ${from}`;

/** Appends the change log entries of changes to either table and truncates (see changeLogEntries). */
export const INSERT_CHANGE_LOG = named<ChangeLogParam | 'tables'>(insertChangeLogFrom(changeLogEntries()));
