/** Cluster administration SQL of the embedded stack and `db init`: databases and role passwords. */
import type pg from 'pg';
import { quoteIdent } from './sql';

export async function ensureDatabaseExists(client: pg.ClientBase, dbName: string): Promise<void> {
  if (!(await databaseExists(client, dbName))) await client.query(`CREATE DATABASE ${quoteIdent(dbName)}`);
}

/** ALTER ROLE takes no bind parameters: the password is quoted by format(%L) on the server. */
export async function setRolePassword(
  client: pg.ClientBase,
  role: 'stategrid_cdc' | 'stategrid_sink',
  password: string,
): Promise<void> {
  const { rows } = await client.query(
    `SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text) AS sql`,
    [role, password],
  );
  await client.query(rows[0].sql);
}

export async function databaseExists(client: pg.ClientBase, dbName: string): Promise<boolean> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName]);
  return !!rowCount;
}

export async function tableExists(client: pg.ClientBase, table: string): Promise<boolean> {
  const { rows } = await client.query('SELECT to_regclass($1) IS NOT NULL AS found', [table]);
  return rows[0].found as boolean;
}

/** A login role with this password (created or reset); CREATE ROLE takes no bind parameters, hence format(). */
export async function ensureLoginRole(
  client: pg.ClientBase,
  role: string,
  password: string,
  opts: { createDb?: boolean } = {},
): Promise<void> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
  const verb = rowCount ? 'ALTER' : 'CREATE';
  const { rows } = await client.query(
    `SELECT format('${verb} ROLE %I LOGIN ${opts.createDb ? 'CREATEDB ' : ''}PASSWORD %L', $1::text, $2::text) AS sql`,
    [role, password],
  );
  await client.query(rows[0].sql);
}
