import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config';
import { openPool, withClient, withTransaction } from '../../src/db/client';

/**
 * The worker's sink pool under connections killed at any moment, as `pg_terminate_backend` or a restart of the sink
 * database does: a connection ended right after it became ready once crashed the worker with an unhandled 'error'
 * event (the kill test in recovery.test.ts, in one CI run of about ten); here it takes a second or two.
 */
describe('database pool under killed connections', function () {
  this.timeout(120000);
  const cfg = loadConfig();

  it('ends no process: every transaction commits or fails, none hangs, and the pool serves afterwards', async () => {
    const app = `stategrid-pool-test-${process.pid}`;
    const pool = openPool({ connectionString: cfg.sinkUrl, max: 3, application_name: app });
    const outcomes = { committed: 0, failed: 0 };
    const until = Date.now() + 8000;
    let kills = 0;
    try {
      const transactions = Array.from({ length: 6 }, async () => {
        while (Date.now() < until) {
          try {
            await withTransaction(pool, async (client) => {
              await client.query('SELECT pg_sleep(random() * 0.02)');
              await client.query('SELECT 1');
            });
            outcomes.committed += 1;
          } catch {
            outcomes.failed += 1;
          }
        }
      });
      await withClient(cfg.sinkUrl, async (killer) => {
        while (Date.now() < until) {
          await new Promise((r) => setTimeout(r, Math.random() * 30));
          const { rows } = await killer.query<{ n: number }>(
            `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1`,
            [app],
          );
          kills += rows[0].n;
        }
      });
      const settled = await Promise.race([
        Promise.all(transactions).then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 20000)),
      ]);
      assert.ok(settled, 'every transaction settled within 20 s of the last kill');
      assert.ok(kills > 50, `connections were killed (${kills})`);
      assert.ok(
        outcomes.committed > 0 && outcomes.failed > 0,
        `some committed, some failed: ${JSON.stringify(outcomes)}`,
      );
      const after = await withTransaction(pool, (client) => client.query<{ ok: number }>('SELECT 1 AS ok'));
      assert.equal(after.rows[0].ok, 1, 'the pool serves after the kills');
    } finally {
      await pool.end();
    }
  });
});
