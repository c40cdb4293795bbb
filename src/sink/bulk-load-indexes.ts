/**
 * DWD detail's secondary indexes around an initial snapshot: dropped before the bulk load and built once over the
 * loaded rows before the pipeline streams (inserting a million rows into three B-trees costs several times what
 * building them does). Their definitions are sql/05_dwd_indexes.sql, read here so they exist in one place.
 */
import type pg from 'pg';
import { readSqlFile } from '../db/sql';

const FILE = '05_dwd_indexes.sql';

/** Each CREATE INDEX statement of the file by the index it creates. */
function indexStatements(): Map<string, string> {
  const statements = new Map<string, string>();
  const text = readSqlFile(FILE).replace(/^--.*$/gm, '');
  for (const statement of text.split(';').map((s) => s.trim())) {
    const name = /^CREATE INDEX IF NOT EXISTS (\w+)/i.exec(statement)?.[1];
    if (name) statements.set(name, statement);
  }
  return statements;
}

/**
 * Drops the indexes when this role owns the table (a restricted sink role keeps them: slower, same result); in
 * the snapshot's first transaction, so a retried or superseded snapshot starts the same way.
 */
export async function dropIndexesForBulkLoad(client: pg.ClientBase): Promise<boolean> {
  const { rows } = await client.query<{ owner: boolean }>(
    `SELECT pg_has_role(current_user, relowner, 'USAGE') AS owner FROM pg_class
     WHERE oid = 'dwd_power_consumption_detail'::regclass`,
  );
  if (!rows[0]?.owner) return false;
  for (const name of indexStatements().keys()) await client.query(`DROP INDEX IF EXISTS ${name}`);
  return true;
}

/** Creates the indexes that are missing (none when the load kept them); in the snapshot's finishing transaction. */
export async function buildMissingIndexes(client: pg.ClientBase): Promise<string[]> {
  const statements = indexStatements();
  const { rows } = await client.query<{ name: string }>(
    `SELECT n AS name FROM unnest($1::text[]) n WHERE to_regclass(n) IS NULL`,
    [[...statements.keys()]],
  );
  if (!rows.length) return [];
  await client.query(`SET LOCAL maintenance_work_mem = '256MB'`);
  for (const { name } of rows) await client.query(statements.get(name)!);
  return rows.map((r) => r.name);
}
