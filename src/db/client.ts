import pg from 'pg';

/** Runs `fn` on a fresh connection that is always closed afterwards: for short, one-off database work. */
export async function withClient<T>(
  connectionString: string,
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({ connectionString });
  client.on('error', () => undefined); // surfaced by the failing query; unhandled it would crash the process
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
