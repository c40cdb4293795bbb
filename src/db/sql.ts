import fs from 'node:fs';
import path from 'node:path';

/** The one place identifiers are quoted; values always travel as query parameters. */
export function quoteIdent(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\u0000')) {
    throw new Error(`invalid SQL identifier: ${JSON.stringify(name)}`);
  }
  return '"' + name.replace(/"/g, '""') + '"';
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
