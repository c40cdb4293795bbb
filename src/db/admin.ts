/** Cluster administration SQL of the embedded stack and `db init`: databases and role passwords. */
import type pg from 'pg';
import { quoteIdent } from './sql';

export async function ensureDatabaseExists(client: pg.ClientBase, dbName: string): Promise<void> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName]);
  if (!rowCount) await client.query(`CREATE DATABASE ${quoteIdent(dbName)}`);
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
