/**
 * What the CLI prints. Results go to stdout; with `--json` stdout carries the JSON document only, so progress and
 * log lines of such a run go to stderr (`jsonOutput`). Result sets are printed as aligned tables in psql's layout.
 */

let jsonRun = false;

/**
 * From here on stdout carries only what `printJson` writes: result lines of `say`, and anything a library prints
 * with console.log, go to stderr. Called before the action of a command run with `--json`.
 */
export function jsonOutput(): void {
  jsonRun = true;
  console.log = console.info = console.debug = console.error;
}

/** A line of the command's result: stdout, or stderr in a `--json` run. */
export const say = (m: string): void => {
  (jsonRun ? process.stderr : process.stdout).write(m + '\n');
};

/** The whole stdout of a `--json` run. */
export const printJson = (value: unknown): void => {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
};

export type Column = { name: string; align?: 'left' | 'right' };

/** The shape of a query result the printer needs: `pg`'s QueryResult has both. */
export type ResultSet = {
  rows: Record<string, unknown>[];
  fields?: { name: string; dataTypeID: number }[];
};

// int8, int2, int4, oid, float4, float8, money, numeric: pg returns some of them as strings.
const NUMERIC_TYPES = new Set([20, 21, 23, 26, 700, 701, 790, 1700]);

/** Columns of a query result, numeric types right-aligned as psql does. */
export function columnsOf(fields: NonNullable<ResultSet['fields']>): Column[] {
  return fields.map((f) => ({ name: f.name, align: NUMERIC_TYPES.has(f.dataTypeID) ? 'right' : 'left' }));
}

/** A value as psql shows it: no quotes, null empty, booleans t/f. */
export function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'boolean') return v ? 't' : 'f';
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v).replace(/\r?\n/g, '\\n').replace(/\t/g, '\\t');
}

function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

/** Terminal columns a string takes: East Asian wide characters count 2, combining marks 0. */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if ((cp >= 0x0300 && cp <= 0x036f) || cp === 0x200b) continue;
    w += isWide(cp) ? 2 : 1;
  }
  return w;
}

const pad = (s: string, width: number, align: 'left' | 'right' | 'center'): string => {
  const gap = width - displayWidth(s);
  if (align === 'right') return ' '.repeat(gap) + s;
  if (align === 'left') return s + ' '.repeat(gap);
  const before = Math.floor(gap / 2);
  return ' '.repeat(before) + s + ' '.repeat(gap - before);
};

function inferColumns(rows: Record<string, unknown>[]): Column[] {
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return names.map((name) => {
    const values = rows.map((r) => r[name]).filter((v) => v !== null && v !== undefined);
    const numeric = values.length > 0 && values.every((v) => typeof v === 'number' || typeof v === 'bigint');
    return { name, align: numeric ? 'right' : 'left' };
  });
}

const footer = (n: number) => `(${n} ${n === 1 ? 'row' : 'rows'})`;

/**
 * Rows as psql prints them: centred header, `-+-` separator, numbers right-aligned, `(N rows)`. Without
 * `columns`, columns are the rows' keys in order and right-aligned when every value is a number.
 */
export function formatTable(rows: Record<string, unknown>[], columns?: Column[]): string {
  const cols = columns ?? inferColumns(rows);
  if (!cols.length) return footer(rows.length);
  const cells = rows.map((r) => cols.map((c) => cellText(r[c.name])));
  const widths = cols.map((c, i) =>
    Math.max(displayWidth(c.name), ...cells.map((row) => displayWidth(row[i]))),
  );
  const line = (values: string[], align: (i: number) => 'left' | 'right' | 'center') =>
    values
      .map((v, i) => ' ' + pad(v, widths[i], align(i)) + ' ')
      .join('|')
      .trimEnd();
  return [
    line(
      cols.map((c) => c.name),
      () => 'center',
    ),
    widths.map((w) => '-'.repeat(w + 2)).join('+'),
    ...cells.map((row) => line(row, (i) => cols[i].align ?? 'left')),
    footer(rows.length),
  ].join('\n');
}

/** A query result under a title, followed by a blank line, as psql's `\pset title` would print it. */
export function printTable(title: string, result: ResultSet): void {
  say(title);
  say(formatTable(result.rows, result.fields ? columnsOf(result.fields) : undefined));
  say('');
}
