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

/**
 * A pool whose connections never crash the process with an unhandled 'error' event: each has a listener from
 * the moment it connects, so a connection lost while checked out is reported by its failing query (or by the
 * ROLLBACK of withTransaction), and one lost while idle is passed to `onIdleError` and replaced. A listener added
 * after `pool.connect()` resolves comes too late: when the server ends a fresh connection right after it is
 * ready, its error can arrive in the same network read as the ready message, and node-postgres emits it before
 * the promise's continuation runs (found by killing the worker's sink connections; it ended the worker).
 */
export function openPool(
  config: pg.PoolConfig,
  onIdleError: (err: Error) => void = () => undefined,
): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on('connect', (client) => client.on('error', () => undefined));
  pool.on('error', onIdleError);
  return pool;
}

/** Runs `fn` in a transaction on a connection of `pool` (from openPool); rolls back if `fn` throws. */
export async function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
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
    client.release(broken); // a broken connection is destroyed, not returned to the pool
  }
}
