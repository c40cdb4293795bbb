import assert from 'node:assert/strict';
import fc from 'fast-check';
import pg from 'pg';
import type { Row, SourceTable } from '../../src/cdc/changes';
import { invalidReason } from '../../src/cdc/validate';
import {
  CREATE_STAGING,
  SNAPSHOT_COLUMNS,
  STAGED_WITH_REASON,
  stagingTable,
} from '../../src/sink/snapshot-load';
import { consumptionRow, userRow } from '../shared/row-arbitraries';
import { TestContext } from './helpers/pipeline';

/**
 * The snapshot validates rows in SQL, streaming in TypeScript: both must give the same verdict and reason for
 * every row. Random rows (fast-check) go through the real PostgreSQL staging query and through validate.ts.
 */
describe('snapshot SQL validation agrees with validate.ts', function () {
  this.timeout(120000);
  const t = new TestContext();
  let db: pg.Client;
  before(async () => {
    db = new pg.Client({ connectionString: t.cfg.sinkUrl });
    await db.connect();
  });
  after(async () => {
    await db.end();
    await t.close();
  });

  // PostgreSQL text cannot hold NUL or lone surrogates, so such values never reach either path.
  const storable = (v: string | null | undefined) =>
    v === null || v === undefined || (!v.includes('\u0000') && !/\p{Surrogate}/u.test(v));

  async function compare(table: SourceTable, rows: fc.Arbitrary<Row>): Promise<void> {
    const cols = SNAPSHOT_COLUMNS[table];
    const key = cols[0];
    const seed = Date.now();
    const sample = fc
      .sample(rows, { numRuns: 3000, seed })
      .filter((r) => cols.every((c) => storable(r[c])))
      .map((r, i) => Object.fromEntries([...cols.map((c) => [c, r[c] ?? null]), [key, String(i)]]) as Row);
    await db.query('BEGIN');
    await db.query(CREATE_STAGING(table));
    await db.query(
      `INSERT INTO ${stagingTable(table)} SELECT * FROM jsonb_to_recordset($1::jsonb)
       AS x(${cols.map((c) => `${c} text`).join(', ')})`,
      [JSON.stringify(sample)],
    );
    const { rows: verdicts } = await db.query<{ k: string; reason: string | null }>(
      `SELECT ${key} AS k, reason FROM (${STAGED_WITH_REASON(table)}) v ORDER BY ${key}::int`,
    );
    await db.query('ROLLBACK');
    assert.equal(verdicts.length, sample.length);
    let invalid = 0;
    for (const v of verdicts) {
      const row = sample[Number(v.k)];
      const expected = invalidReason(table, row);
      if (expected) invalid++;
      assert.equal(v.reason, expected, `seed ${seed}, ${table} row ${JSON.stringify(row)}`);
    }
    assert.ok(invalid > 100 && invalid < sample.length - 100, `both verdicts exercised (${invalid} invalid)`);
  }

  it('for power_consumption rows', () => compare('power_consumption', consumptionRow));
  it('for power_user rows', () => compare('power_user', userRow));
});
