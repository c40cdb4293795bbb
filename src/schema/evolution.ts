/**
 * Schema evolution of the ODS mirrors, as pure decisions: given the columns a source table has now, what the sink
 * recorded about earlier ones and what its ODS table holds, which columns to add, keep writing, report as dropped
 * or leave out. The sink (src/sink/ods-columns.ts) carries the steps out; nothing here touches a database.
 */
import { ODS_RESERVED_NAMES, type Column, type SourceTableSpec } from './tables';

/**
 * A source column as the source reports it: its type as `format_type` prints it, or null when unknown; `missing`:
 * the value rows that predate the column read (it was added with a constant default, which PostgreSQL keeps in the
 * catalog instead of writing it into those rows, so the WAL never carries it), as text. `defaultInRows`: it has a
 * default but none in the catalog for older rows: a volatile one (`now()`, `gen_random_uuid()`) made PostgreSQL
 * rewrite the table, writing a value into every existing row, which the WAL does not carry either.
 */
export type SourceColumn = {
  name: string;
  type: string | null;
  missing?: string | null;
  defaultInRows?: boolean;
};

/**
 * `mirrored`: in ODS, written by every row change; `dropped`: gone at the source, kept in ODS (nullable) and
 * written as NULL by rows changed since; `skipped`: at the source but not in ODS (its values stay in the change log).
 */
export type ColumnState = 'mirrored' | 'dropped' | 'skipped';

/** What the sink recorded about a source column (table stategrid_ods_column). */
export type TrackedColumn = { name: string; type: string | null; state: ColumnState; detail: string | null };

/** A column of an ODS table as its catalog describes it. */
export type OdsColumn = { type: string; notNull: boolean };

export type ColumnStep =
  /**
   * ALTER TABLE … ADD COLUMN IF NOT EXISTS, then mirrored (skipped if PostgreSQL refuses); with `missing`, the rows
   * ODS holds take that value, as the source's rows that predate the column do. `replace`: a column dropped at the
   * source came back; its ODS column, whose values belong to the column that was dropped, is dropped first.
   * `unfilled`: the source wrote a default into its older rows that ODS cannot know (see SourceColumn).
   */
  | { action: 'add'; name: string; type: string; missing: string | null; replace?: true; unfilled?: true }
  /** The ODS table already has the column with the source's type: write it from now on. */
  | { action: 'mirror'; name: string; type: string; detail: string }
  /** Gone at the source: kept in ODS; NOT NULL (never the key's) is dropped so new rows can leave it empty. */
  | { action: 'drop'; name: string; type: string | null; dropNotNull: boolean }
  | { action: 'skip'; name: string; type: string | null; detail: string };

// format_type output of built-in and search-path types: a name, the words of the multi-word built-ins, an
// optional modifier, array brackets. Anything else (quoted or schema-qualified names) is not written into DDL.
const TYPE_WORD = '(precision|varying|with|without|time|zone|year|month|day|hour|minute|second|to)';
const PLAIN_TYPE = new RegExp(
  `^[a-z_][a-z0-9_]*( ${TYPE_WORD})*(\\(\\d+(,\\d+)?\\))?( ${TYPE_WORD})*(\\[\\])*$`,
);

/** True when `type` (format_type text) may be written as the type of an ODS column. */
export function mirrorableType(type: string | null): type is string {
  return type !== null && type.length <= 100 && PLAIN_TYPE.test(type);
}

/** Why a reported column cannot be mirrored as it stands, or null when it can. */
function unmirrorable(c: SourceColumn, tracked: TrackedColumn | undefined): string | null {
  if (ODS_RESERVED_NAMES.includes(c.name)) return `the name is taken by ODS metadata`;
  if (c.type === null) return 'its type is unknown (no longer in the source catalog)';
  if (!mirrorableType(c.type)) return `type ${c.type} cannot be mirrored`;
  if (tracked?.state === 'mirrored' && tracked.type !== c.type)
    return `its type changed at the source from ${tracked.type} to ${c.type}`;
  return null;
}

/** The step for one reported column beyond the spec, or null when nothing changes. */
function stepForReported(
  c: SourceColumn,
  tracked: TrackedColumn | undefined,
  ods: ReadonlyMap<string, OdsColumn>,
): ColumnStep | null {
  // A mirrored column whose type the stream does not tell (wal2json, column gone since) stays as it is.
  if (c.type === null && tracked?.state === 'mirrored') return null;
  const reason = unmirrorable(c, tracked);
  const skip = (detail: string): ColumnStep | null =>
    tracked?.state === 'skipped' && tracked.detail === detail
      ? null
      : { action: 'skip', name: c.name, type: c.type, detail };
  if (reason) return skip(reason);
  const type = c.type as string;
  const existing = ods.get(c.name);
  const add: ColumnStep = {
    action: 'add',
    name: c.name,
    type,
    missing: c.missing ?? null,
    ...(c.defaultInRows ? { unfilled: true as const } : {}),
  };
  if (!existing) return add;
  // Added again after a drop: the source's rows hold NULL or the new default there, not the old values.
  if (tracked?.state === 'dropped') return { ...add, replace: true };
  if (existing.type !== type) return skip(`the ODS column has type ${existing.type}, the source ${type}`);
  if (tracked?.state === 'mirrored') return null;
  return { action: 'mirror', name: c.name, type, detail: 'the ODS column already existed' };
}

/**
 * Steps that bring a table's ODS mirror in line with the columns its source has now (`reported`). Spec columns are
 * always in ODS; only their disappearance (and return) is recorded. Columns the sink never mirrored and that are
 * gone again need nothing.
 */
export function planColumns(
  spec: Pick<SourceTableSpec, 'key' | 'columns'>,
  reported: readonly SourceColumn[],
  tracked: readonly TrackedColumn[],
  ods: ReadonlyMap<string, OdsColumn>,
): ColumnStep[] {
  const specNames = new Set(spec.columns.map((c) => c.name));
  const trackedByName = new Map(tracked.map((t) => [t.name, t]));
  const reportedNames = new Set(reported.map((c) => c.name));
  const steps: ColumnStep[] = [];
  for (const c of reported) {
    const t = trackedByName.get(c.name);
    if (specNames.has(c.name)) {
      if (t?.state === 'dropped')
        steps.push({ action: 'mirror', name: c.name, type: c.type ?? '?', detail: 're-added at the source' });
      continue;
    }
    const step = stepForReported(c, t, ods);
    if (step) steps.push(step);
  }
  const gone = [
    ...spec.columns.filter((c) => trackedByName.get(c.name)?.state !== 'dropped'),
    ...tracked.filter((t) => t.state === 'mirrored' && !specNames.has(t.name)),
  ];
  for (const c of gone) {
    if (reportedNames.has(c.name)) continue;
    const notNull = ods.get(c.name)?.notNull ?? false;
    steps.push({ action: 'drop', name: c.name, type: c.type, dropNotNull: notNull && c.name !== spec.key });
  }
  return steps;
}

/**
 * Columns beyond the spec that both the source table and its ODS mirror have, with the same type: the ones verify
 * compares besides the spec columns. Sorted by name, so both sides list them alike.
 */
export function sharedExtraColumns(
  spec: Pick<SourceTableSpec, 'columns'>,
  source: readonly SourceColumn[],
  ods: readonly SourceColumn[],
): Column[] {
  const specNames = new Set(spec.columns.map((c) => c.name));
  const odsType = new Map(ods.map((c) => [c.name, c.type]));
  return source
    .filter(
      (c) =>
        !specNames.has(c.name) &&
        !ODS_RESERVED_NAMES.includes(c.name) &&
        mirrorableType(c.type) &&
        odsType.get(c.name) === c.type,
    )
    .map((c) => ({ name: c.name, type: c.type as string }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * What an `unfilled` column means for the operator (its detail in stategrid_ods_column, its log line). The detail
 * is also the mark the sink counts and a verify clears (src/sink/ods-columns.ts): marks written with an earlier
 * text would no longer count.
 */
export const UNFILLED =
  "its default was written into the source's older rows (a volatile default rewrites the table, without " +
  'changes in the WAL): those rows hold NULL here until the verify the pipeline starts for it, or ' +
  '"stategrid verify --layer ods --repair", copies their values';

/** The log line of a step carried out on `table` (its ODS mirror `ods`). */
export function describeStep(table: string, ods: string, step: ColumnStep): string {
  const col = `${table}.${step.name}`;
  switch (step.action) {
    case 'add':
      return `${col} (${step.type}) ${step.replace ? `re-added at the source: its column in ${ods} is created anew` : `added to ${ods}`}: mirrored from now on${
        step.missing === null ? '' : `; the rows it holds take the default the source's older rows read`
      }${step.unfilled ? `; ${UNFILLED}` : ''}`;
    case 'mirror':
      return `${col} (${step.type}) mirrored into its existing ${ods} column (${step.detail})`;
    case 'drop':
      return `${col} was dropped at the source: kept in ${ods} as a nullable column, rows written from now on get NULL`;
    case 'skip':
      return `${col} (${step.type ?? 'unknown type'}) is not mirrored into ${ods}: ${step.detail}; its values stay in ods_change_log`;
  }
}
