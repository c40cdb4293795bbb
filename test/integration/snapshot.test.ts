import assert from 'node:assert/strict';
import { readSqlFile } from '../../src/db/sql';
import { PIPELINE_ID, pipelineTestContext } from './helpers/pipeline';

/** The DWD indexes the sink schema defines, by name, from the file that defines them. */
const definedIndexes = () =>
  [...readSqlFile('05_dwd_indexes.sql').matchAll(/CREATE INDEX IF NOT EXISTS (\w+)/g)]
    .map((m) => m[1])
    .sort();

/** The fanned-out snapshot's bulk load: chunks over the key ranges, DWD's secondary indexes built once at the end. */
describe('initial snapshot in chunks', function () {
  this.timeout(180000);
  const t = pipelineTestContext();

  it('loads every chunk once, builds the DWD indexes again before streaming, and streams on them', async () => {
    await t.freshPipeline({ snapshotChunkRows: 4000, snapshotParallelism: 3 }, async () => {
      await t.q(`INSERT INTO power_user SELECT g, 'user' || g, '居民用电', 1 + g % 4, 'region' || (1 + g % 4), now()
                 FROM generate_series(1, 300) g`);
      // Users 301-320 are unknown: their consumptions are DWD orphans, which one of the indexes serves.
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 320, (g % 997) / 10.0, (g % 613) / 10.0,
                   '2026-11-20'::timestamp + make_interval(secs => (g * 37) % 172800)
                 FROM generate_series(1, 30000) g`);
    });
    const chunks = await t.q<{ table_name: string; n: number; done: number; loads: number; rows: string }>(
      `SELECT table_name, count(*)::int AS n, count(done_at)::int AS done, sum(attempts)::int AS loads,
         sum(rows)::text AS rows
       FROM stategrid_snapshot_chunk WHERE pipeline_id = $1 GROUP BY 1 ORDER BY 1`,
      [PIPELINE_ID],
    );
    assert.deepEqual(
      chunks.map((c) => [c.table_name, c.done === c.n, c.loads === c.n, c.rows]),
      [
        ['power_consumption', true, true, '30000'],
        ['power_user', true, true, '300'],
      ],
    );
    assert.ok(chunks[0].n >= 8, `30,000 rows in chunks of 4,000: ${chunks[0].n} chunks`);
    const indexes = await t.q<{ name: string; valid: boolean }>(
      `SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       WHERE i.indrelid = 'dwd_power_consumption_detail'::regclass AND NOT i.indisprimary ORDER BY 1`,
    );
    assert.deepEqual(
      indexes.map((i) => i.name),
      definedIndexes(),
    );
    assert.ok(indexes.every((i) => i.valid));
    // Streaming after the snapshot uses them: a user arriving late re-enriches its orphans.
    await t.q(`INSERT INTO power_user VALUES (305, 'late', '居民用电', 2, 'region2', now())`);
    await t.caughtUp();
    const [orphans] = await t.q<{ n: number }>(
      `SELECT count(*)::int AS n FROM dwd_power_consumption_detail WHERE user_id = 305 AND region_id IS NULL`,
    );
    assert.equal(orphans.n, 0);
    await t.assertConverged();
  });

  it('cuts sparse keys by row number and dense ones by key span, each chunk near the size asked', async () => {
    await t.freshPipeline({ snapshotChunkRows: 500 }, async () => {
      await t.q(`INSERT INTO power_user SELECT g, 'user' || g, '居民用电', 1 + g % 4, 'region' || (1 + g % 4), now()
                 FROM generate_series(1, 200) g`);
      // 3,000 consumptions with squared ids: 9,000,000 key values for 3,000 rows.
      await t.q(`INSERT INTO power_consumption SELECT g * g, 1 + g % 200, 1.00, 0.50, '2026-11-20 08:00'
                 FROM generate_series(1, 3000) g`);
    });
    const sizes = await t.q<{ table_name: string; rows: number }>(
      `SELECT table_name, rows::int FROM stategrid_snapshot_chunk WHERE pipeline_id = $1 AND rows > 0
       ORDER BY table_name, chunk_no`,
      [PIPELINE_ID],
    );
    const consumptions = sizes.filter((c) => c.table_name === 'power_consumption').map((c) => c.rows);
    assert.deepEqual(consumptions, [500, 500, 500, 500, 500, 500]);
    const users = sizes.filter((c) => c.table_name === 'power_user').map((c) => c.rows);
    assert.equal(
      users.reduce((a, b) => a + b, 0),
      200,
    );
    assert.ok(
      users.every((r) => r <= 1000),
      `dense user keys in chunks of at most 2 x 500: ${users}`,
    );
    await t.assertConverged();
  });
});
