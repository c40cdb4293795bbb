import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** The one place identifiers are quoted; values always travel as query parameters. */
export function quoteIdent(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\u0000')) {
    throw new Error(`invalid SQL identifier: ${JSON.stringify(name)}`);
  }
  return '"' + name.replace(/"/g, '""') + '"';
}

/**
 * A name as an SQL string literal, for the rare SQL that reads a column by name from data (a JSON key); the
 * cluster's standard_conforming_strings (on by default) keeps backslashes literal. Values still travel as
 * parameters.
 */
export function quoteLiteral(name: string): string {
  if (name.includes('\u0000')) throw new Error(`invalid SQL literal: ${JSON.stringify(name)}`);
  return "'" + name.replace(/'/g, "''") + "'";
}

/** Names we create ourselves (slots, publications) are restricted to what PostgreSQL accepts for slots. */
export function assertSafeName(kind: string, name: string): string {
  if (!/^[a-z0-9_]{1,63}$/.test(name)) {
    throw new Error(`${kind} must match [a-z0-9_]{1,63}, got ${JSON.stringify(name)}`);
  }
  return name;
}

export const SQL_DIR = path.resolve(__dirname, '../../../sql');

export function readSqlFile(name: string): string {
  return fs.readFileSync(path.join(SQL_DIR, name), 'utf8');
}

/**
 * A statement each connection parses and plans once (a named prepared statement), by a name derived from its text,
 * so statements of different text never share a name. For the large statements of the streaming path, parsing
 * and planning every batch cost more than some of their writes (about 7 us per row of a 1,000-row batch).
 * PostgreSQL re-plans a cached statement itself when a table it reads changes.
 */
export type Prepared = { name: string; text: string };

export function prepared(text: string): Prepared {
  return { name: `sg_${crypto.createHash('sha1').update(text).digest('hex').slice(0, 24)}`, text };
}

/**
 * A prepared statement with named parameters (`:name`, never `::type`), compiled once to PostgreSQL's `$n` form.
 * The parameter list is built from an object, so a statement can be composed of parts without renumbering them.
 */
export type Statement<P extends string> = Prepared & { names: readonly P[] };

const NAMED_PARAM = /(?<![:\w]):([a-z_][a-z0-9_]*)/g;

export function named<P extends string>(text: string): Statement<P> {
  const names: P[] = [];
  const compiled = text.replace(NAMED_PARAM, (_m, name: P) => {
    let i = names.indexOf(name);
    if (i < 0) i = names.push(name) - 1;
    return `$${i + 1}`;
  });
  return { ...prepared(compiled), names };
}

/** The `$n` values of a statement, in order; a missing value is a bug, not a NULL. */
export function bind<P extends string>(stmt: Statement<P>, values: Record<P, unknown>): unknown[] {
  return stmt.names.map((n) => {
    if (!(n in values)) throw new Error(`no value for SQL parameter :${n}`);
    return values[n];
  });
}

/** The query of a statement with its values, as pg's query() takes it (by name: see Prepared). */
export function boundQuery<P extends string>(
  stmt: Statement<P>,
  values: Record<P, unknown>,
): { name: string; text: string; values: unknown[] } {
  return { name: stmt.name, text: stmt.text, values: bind(stmt, values) };
}
