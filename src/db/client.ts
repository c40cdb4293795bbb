import pg from 'pg';

/**
 * Runs `fn` on a fresh connection that is always closed afterwards (a transaction left open rolls back): for short,
 * one-off database work. `settings`: a connection string, or a pool's settings for a connection beside the pool.
 */
export async function withClient<T>(
  settings: string | pg.ClientConfig,
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client(typeof settings === 'string' ? { connectionString: settings } : settings);
  client.on('error', () => undefined); // surfaced by the failing query; unhandled it would crash the process
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * Timestamps, dates, numerics and bigints stay text end to end: no JS Date time-zone shifts, no float rounding.
 * Called once by every entry point (worker, CLI, tests, bench) before any query.
 */
export function keepValuesAsText(): void {
  for (const oid of [1082, 1114, 1184, 1700, 20]) pg.types.setTypeParser(oid, (v: string) => v);
}

export async function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  // A connection lost while checked out is reported by the failing query; without a listener the client's
  // 'error' event would crash the worker instead.
  const ignore = () => undefined;
  client.on('error', ignore);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => (broken = e));
    throw err;
  } finally {
    client.removeListener('error', ignore);
    client.release(broken); // a broken connection is destroyed, not returned to the pool
  }
}
