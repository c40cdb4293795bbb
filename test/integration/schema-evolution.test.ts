import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { PipelineStatus } from '../../src/control/pipeline';
import type { VerifyReport } from '../../src/verify/warehouse';
import { PIPELINE_ID, pipelineTestContext, runStategrid, type TestContext } from './helpers/pipeline';

/**
 * Schema evolution reaches ODS: columns added to a source table while the pipeline streams (or before its
 * snapshot) appear in the ODS mirror with their values; dropped ones stay, nullable, and are reported; verify
 * compares them. Checked on real rows, with both decoding plugins.
 */
describe('schema evolution', function () {
  this.timeout(300000);
  const t = pipelineTestContext(resetColumns);

  /** The shared source and sink as the other tests expect them: no column beyond the spec. */
  async function resetColumns(c: TestContext): Promise<void> {
    await c.terminatePipeline();
    await c.q(`ALTER TABLE power_consumption DROP COLUMN IF EXISTS meter_id, DROP COLUMN IF EXISTS _op,
      DROP COLUMN IF EXISTS mood, DROP COLUMN IF EXISTS notes, DROP COLUMN IF EXISTS tariff,
      DROP COLUMN IF EXISTS factor, DROP COLUMN IF EXISTS plain, DROP COLUMN IF EXISTS stamp`);
    await c.q(`ALTER TABLE power_user DROP COLUMN IF EXISTS notes`);
    await c.q('DROP SCHEMA IF EXISTS stategrid_test_types CASCADE');
    await c.q(`ALTER TABLE ods_power_consumption DROP COLUMN IF EXISTS meter_id, DROP COLUMN IF EXISTS notes,
      DROP COLUMN IF EXISTS tariff, DROP COLUMN IF EXISTS factor, DROP COLUMN IF EXISTS plain,
      DROP COLUMN IF EXISTS stamp`);
    await c.q('ALTER TABLE ods_power_user DROP COLUMN IF EXISTS notes');
    await c.q('DELETE FROM stategrid_ods_column');
  }

  const seedUsers = () =>
    t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 3, 'r' || (1 + g % 3), now()
      FROM generate_series(1, 20) g`);

  /** A fresh pipeline whose snapshot holds the users and consumptions 1..`consumptions`. */
  const freshPipeline = (plugin: 'pgoutput' | 'wal2json', consumptions: number) =>
    t.freshPipeline({ plugin }, async () => {
      await seedUsers();
      await t.q(
        `INSERT INTO power_consumption SELECT g, 1 + g % 20, 1.50, 0.75, '2026-11-20 08:00:00'
         FROM generate_series(1, $1::int) g`,
        [consumptions],
      );
    });

  /** Rows whose meter_id differs between the source and its ODS mirror (either way). */
  const meterDiff = () =>
    t.diff(
      'SELECT consumption_id, meter_id FROM power_consumption',
      'SELECT consumption_id, meter_id FROM ods_power_consumption',
    );

  const odsColumn = async (name: string) =>
    (
      await t.q<{ type: string; not_null: boolean }>(
        `SELECT format_type(atttypid, atttypmod) AS type, attnotnull AS not_null FROM pg_attribute
         WHERE attrelid = 'ods_power_consumption'::regclass AND attname = $1 AND NOT attisdropped`,
        [name],
      )
    )[0];

  const status = (): PipelineStatus => {
    const r = runStategrid(['pipeline', 'status', '--id', PIPELINE_ID, '--json']);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as PipelineStatus;
  };

  const verifyOds = () => {
    const r = runStategrid(['verify', '--id', PIPELINE_ID, '--layer', 'ods', '--json'], 180000);
    assert.notEqual(r.status, 2, r.stderr);
    return { code: r.status, report: JSON.parse(r.stdout) as VerifyReport };
  };

  /** What the worker logged since `from` (a byte offset of its log). */
  const workerLog = () => path.join(t.cfg.home, 'logs', 'worker.log');
  const loggedSince = (from: number) => fs.readFileSync(workerLog()).subarray(from).toString('utf8');

  for (const plugin of ['pgoutput', 'wal2json'] as const) {
    it(`${plugin}: ADD COLUMN meter_id TEXT is mirrored with its values; DROP COLUMN keeps it, nullable, reported; ADD again starts it anew`, async () => {
      await resetColumns(t);
      const logStart = fs.statSync(workerLog()).size;
      await freshPipeline(plugin, 500);
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 2.00, 1.00, '2026-11-20 09:00:00'
        FROM generate_series(501, 600) g`);

      await t.q('ALTER TABLE power_consumption ADD COLUMN meter_id TEXT');
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 3.00, 1.50, '2026-11-20 10:00:00', 'M-' || g
        FROM generate_series(601, 1600) g`);
      await t.q(
        `UPDATE power_consumption SET meter_id = 'M-old-' || consumption_id WHERE consumption_id <= 10`,
      );
      await t.q(`INSERT INTO power_consumption VALUES (1601, 1, 1.00, 0.50, '2026-11-20 11:00:00', NULL)`);
      // A type of another schema is not written into ODS DDL: skipped, its value kept in the change log.
      await t.q(`CREATE SCHEMA stategrid_test_types;
        CREATE TYPE stategrid_test_types.mood AS ENUM ('calm', 'busy');
        ALTER TABLE power_consumption ADD COLUMN mood stategrid_test_types.mood`);
      await t.q(
        `INSERT INTO power_consumption VALUES (1603, 3, 1.00, 0.50, '2026-11-20 11:00:00', 'M-mood', 'busy')`,
      );
      // A user change in the same transaction takes the general (multi-table) batch path.
      await t.q(`BEGIN; UPDATE power_user SET user_name = 'renamed' WHERE user_id = 2;
        INSERT INTO power_consumption VALUES (1602, 2, 1.00, 0.50, '2026-11-20 11:00:00', 'M-with-user'); COMMIT`);
      await t.caughtUp();

      assert.deepEqual(await odsColumn('meter_id'), { type: 'text', not_null: false });
      assert.equal(await meterDiff(), 0, 'ods_power_consumption.meter_id equals the source');
      const meters = await t.q<{ n: number }>(
        `SELECT count(meter_id)::int AS n FROM ods_power_consumption WHERE meter_id LIKE 'M-%'`,
      );
      assert.equal(meters[0].n, 1000 + 10 + 1 + 1);
      await t.assertConverged(); // DWD and DWS are untouched by the new columns
      assert.equal(await odsColumn('mood'), undefined);
      const mood = await t.q<{ mood: string }>(
        `SELECT row_data->>'mood' AS mood FROM ods_change_log WHERE row_data->>'consumption_id' = '1603'`,
      );
      assert.deepEqual(mood, [{ mood: 'busy' }]);

      const before = await t.q<{ consumption_id: string; meter_id: string }>(
        `SELECT consumption_id, meter_id FROM ods_power_consumption WHERE consumption_id IN (700, 701) ORDER BY 1`,
      );
      await t.q('ALTER TABLE power_consumption DROP COLUMN meter_id');
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 4.00, 2.00, '2026-11-20 12:00:00'
        FROM generate_series(1604, 1700) g`);
      await t.q(`UPDATE power_consumption SET consumption_amount = 9.99 WHERE consumption_id = 701`);
      await t.caughtUp();

      assert.deepEqual(await odsColumn('meter_id'), { type: 'text', not_null: false }, 'kept, nullable');
      const after = await t.q<{ consumption_id: string; meter_id: string | null }>(
        `SELECT consumption_id, meter_id FROM ods_power_consumption
         WHERE consumption_id IN (700, 701, 1650) ORDER BY 1`,
      );
      assert.deepEqual(after, [
        before[0], // untouched since the drop: keeps its value
        { consumption_id: '701', meter_id: null }, // written since: the column no longer has a value
        { consumption_id: '1650', meter_id: null },
      ]);
      await t.assertConverged(); // streaming went on

      const columns = status().sink.odsColumns;
      const reported = columns.find((c) => c.name === 'meter_id');
      assert.equal(reported?.state, 'dropped');
      assert.equal(reported?.table, 'power_consumption');
      const skipped = columns.find((c) => c.name === 'mood');
      assert.equal(skipped?.state, 'skipped');
      assert.equal(skipped?.detail, 'type stategrid_test_types.mood cannot be mirrored');
      const log = loggedSince(logStart);
      assert.match(log, /power_consumption\.meter_id \(text\) added to ods_power_consumption/);
      assert.match(
        log,
        /power_consumption\.meter_id was dropped at the source: kept in ods_power_consumption/,
      );
      assert.match(log, /power_consumption\.mood \(stategrid_test_types\.mood\) is not mirrored/);

      // Added again: the source's older rows read the new default, not the values of the column that was dropped.
      await t.q(`ALTER TABLE power_consumption ADD COLUMN meter_id TEXT DEFAULT 'again'`);
      await t.q(`INSERT INTO power_consumption
        (consumption_id, user_id, consumption_amount, consumption_cost, consumption_date, meter_id)
        VALUES (1701, 1, 1.00, 0.50, '2026-11-20 13:00:00', 'M-back')`);
      await t.caughtUp();
      assert.equal(await meterDiff(), 0, 'meter_id in ODS equals the source after its re-add');
      const readded = await t.q<{ consumption_id: string; meter_id: string }>(
        `SELECT consumption_id, meter_id FROM ods_power_consumption WHERE consumption_id IN (700, 1701) ORDER BY 1`,
      );
      assert.deepEqual(readded, [
        { consumption_id: '700', meter_id: 'again' },
        { consumption_id: '1701', meter_id: 'M-back' },
      ]);
      assert.equal(status().sink.odsColumns.find((c) => c.name === 'meter_id')?.state, 'mirrored');
      await t.assertConverged();
    });
  }

  for (const plugin of ['pgoutput', 'wal2json'] as const) {
    it(`${plugin}: ADD COLUMN … DEFAULT: rows that predate the column read its default in ODS, as at the source`, async () => {
      await resetColumns(t);
      await freshPipeline(plugin, 100);
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 1.50, 0.75, '2026-11-20 09:00:00'
        FROM generate_series(101, 200) g`);
      await t.caughtUp();
      // In one transaction, so the rows before the columns and after them share a batch: PostgreSQL fills the
      // older rows from the catalog, without writing them (nothing in the WAL says their value).
      await t.q(`BEGIN;
        INSERT INTO power_consumption SELECT g, 1 + g % 20, 2.00, 1.00, '2026-11-20 10:00:00'
          FROM generate_series(201, 250) g;
        ALTER TABLE power_consumption ADD COLUMN tariff TEXT DEFAULT 'it''s standard',
          ADD COLUMN factor NUMERIC(4,2) DEFAULT 1.25, ADD COLUMN plain TEXT;
        INSERT INTO power_consumption SELECT g, 1 + g % 20, 2.00, 1.00, '2026-11-20 11:00:00',
          CASE WHEN g % 2 = 0 THEN 'peak' END, 0.5, 'p' || g FROM generate_series(251, 300) g;
        COMMIT`);
      // An older row updated: the update sends the default it reads.
      await t.q(`UPDATE power_consumption SET consumption_amount = 9.00 WHERE consumption_id IN (5, 205)`);
      await t.caughtUp();

      assert.equal(
        await t.diff(
          'SELECT consumption_id, tariff, factor, plain FROM power_consumption',
          'SELECT consumption_id, tariff, factor, plain FROM ods_power_consumption',
        ),
        0,
        'tariff, factor and plain in ODS equal the source',
      );
      const older = await t.q<{ tariff: string; factor: string; plain: string | null }>(
        `SELECT tariff, factor::text, plain FROM ods_power_consumption WHERE consumption_id = 42`,
      );
      assert.deepEqual(older, [{ tariff: "it's standard", factor: '1.25', plain: null }]);
      // The default fills only the rows that were there: the ODS columns have none.
      const defaults = await t.q<{ name: string }>(
        `SELECT a.attname AS name FROM pg_attrdef d
         JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
         WHERE d.adrelid = 'ods_power_consumption'::regclass`,
      );
      assert.deepEqual(defaults, [{ name: '_synced_at' }]);
      await t.assertConverged();
    });
  }

  for (const plugin of ['pgoutput', 'wal2json'] as const) {
    it(`${plugin}: ADD COLUMN … DEFAULT volatile: the older rows' values, which the WAL lacks, are reported and filled`, async () => {
      await resetColumns(t);
      await freshPipeline(plugin, 100);
      const logFrom = fs.statSync(workerLog()).size;
      // A volatile default rewrites the table: each older row gets its own value, and no change says which.
      await t.q(`ALTER TABLE power_consumption ADD COLUMN stamp TEXT DEFAULT md5(random()::text),
        ADD COLUMN tariff TEXT DEFAULT 'flat', ADD COLUMN plain TEXT`);
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 2.00, 1.00, '2026-11-20 11:00:00'
        FROM generate_series(101, 120) g`);
      await t.caughtUp();

      // Reported as the columns arrive. The rewrite wrote the constant default into the rows too, leaving none in
      // the catalog for older rows; a column without a default is NULL in the older rows at the source as in ODS.
      const logged = loggedSince(logFrom);
      assert.match(logged, /power_consumption\.stamp .*verify --layer ods --repair/);
      assert.match(logged, /power_consumption\.tariff .*verify --layer ods --repair/);
      assert.doesNotMatch(logged, /power_consumption\.plain .*verify/);
      // The pipeline starts a verify with repair of ODS beside it: it copies the older rows' values, then marks the
      // columns filled.
      const diff = () =>
        t.diff(
          'SELECT consumption_id, stamp, tariff, plain FROM power_consumption',
          'SELECT consumption_id, stamp, tariff, plain FROM ods_power_consumption',
        );
      await t.waitFor('the older rows filled', async () => (await diff()) === 0, 120000);
      const detailOf = (name: string) =>
        status().sink.odsColumns.find((c) => c.name === name)?.detail ?? null;
      await t.waitFor(
        'the columns marked filled',
        async () => /^filled/.test(detailOf('tariff') ?? ''),
        60000,
      );
      assert.match(detailOf('stamp') ?? '', /^filled/);
      assert.equal(detailOf('plain'), null);
      const repaired = await t.q<{ n: number }>(
        `SELECT count(*)::int AS n FROM stategrid_repair
         WHERE table_name = 'ods_power_consumption' AND action = 'updated'`,
      );
      assert.equal(repaired[0].n, 100, 'the repair wrote the 100 older rows, which no change had carried');
      await t.assertConverged();
    });
  }

  /**
   * About 6 kB of hex digests: compression cannot bring them under the 2 kB TOAST threshold, so PostgreSQL stores
   * the value out of line, and an update that leaves it unchanged does not send it (pgoutput marks it unchanged, wal2json
   * leaves it out).
   */
  const largeText = (seed: string) =>
    `(SELECT string_agg(md5(${seed} || '/' || i), '') FROM generate_series(1, 200) i)`;
  const notesDiff = (table: 'power_consumption' | 'power_user', key: string) =>
    t.diff(`SELECT ${key}, md5(notes) FROM ${table}`, `SELECT ${key}, md5(notes) FROM ods_${table}`);

  for (const plugin of ['pgoutput', 'wal2json'] as const) {
    it(`${plugin}: a large extra value an update leaves unchanged (not sent) keeps its ODS value`, async () => {
      await resetColumns(t);
      await freshPipeline(plugin, 0);
      await t.q('ALTER TABLE power_consumption ADD COLUMN notes TEXT');
      await t.q('ALTER TABLE power_user ADD COLUMN notes TEXT');
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 1.00, 0.50, '2026-11-20 08:00:00',
        ${largeText("'c' || g")} FROM generate_series(1, 40) g`);
      await t.q(`UPDATE power_user SET notes = ${largeText("'u' || user_id")} WHERE user_id <= 5`);
      await t.caughtUp();
      const [{ toast }] = await t.q<{ toast: string }>(
        `SELECT reltoastrelid::regclass::text AS toast FROM pg_class WHERE oid = 'power_consumption'::regclass`,
      );
      const outOfLine = await t.q<{ n: number }>(`SELECT count(DISTINCT chunk_id)::int AS n FROM ${toast}`);
      assert.ok(outOfLine[0].n >= 40, `the notes are stored out of line: ${outOfLine[0].n} values`);

      // Each step is a batch of its own (caught up in between): consumption updates alone take the one-statement
      // path, whose rows come from their change log entries.
      await t.q(`UPDATE power_consumption SET consumption_amount = 2.00 WHERE consumption_id <= 10`);
      await t.caughtUp();
      // Within one transaction: a new large value, then an update that leaves it unchanged.
      await t.q(`BEGIN;
        UPDATE power_consumption SET notes = ${largeText("'new' || consumption_id")}
          WHERE consumption_id BETWEEN 11 AND 15;
        UPDATE power_consumption SET consumption_amount = 3.00 WHERE consumption_id BETWEEN 11 AND 20;
        COMMIT`);
      await t.caughtUp();
      // With user changes in the same transaction (the statement per layer path), users' own notes included.
      await t.q(`BEGIN;
        UPDATE power_user SET user_name = 'renamed ' || user_id WHERE user_id <= 5;
        UPDATE power_consumption SET consumption_amount = 4.00 WHERE consumption_id BETWEEN 21 AND 25;
        COMMIT`);
      await t.caughtUp();
      // A key change: the value is the one the row had under its old key; then one in the same transaction as a
      // user change.
      await t.q(`UPDATE power_consumption SET consumption_id = consumption_id + 1000
        WHERE consumption_id BETWEEN 26 AND 27`);
      await t.caughtUp();
      await t.q(`BEGIN;
        UPDATE power_user SET user_name = 'again ' || user_id WHERE user_id <= 5;
        UPDATE power_consumption SET consumption_id = consumption_id + 1000 WHERE consumption_id BETWEEN 28 AND 29;
        COMMIT`);
      await t.caughtUp();

      assert.equal(await notesDiff('power_consumption', 'consumption_id'), 0, 'consumption notes in ODS');
      assert.equal(await notesDiff('power_user', 'user_id'), 0, 'user notes in ODS');
      await t.assertConverged();
      // The change log keeps what the source sent: the updates that left the value unchanged have no notes.
      const logged = await t.q<{ sent: boolean }>(
        `SELECT row_data ? 'notes' AS sent FROM ods_change_log
         WHERE table_name = 'power_consumption' AND op = 'U' AND row_data->>'consumption_id' = '5'`,
      );
      assert.deepEqual(logged, [{ sent: false }]);
    });
  }

  it('a snapshot fills the extra column, a clashing name stays in the change log, verify compares and repair fills meter_id', async () => {
    await resetColumns(t);
    await t.q('ALTER TABLE power_consumption ADD COLUMN meter_id TEXT, ADD COLUMN _op TEXT');
    await t.freshPipeline({}, async () => {
      await seedUsers();
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 1.50, 0.75, '2026-11-21 08:00:00',
        'S-' || g, 'source-op' FROM generate_series(1, 2000) g`);
    });
    assert.equal(await meterDiff(), 0, 'the snapshot filled meter_id');
    assert.equal(
      (
        await t.q<{ n: number }>(
          `SELECT count(*)::int AS n FROM ods_power_consumption WHERE meter_id LIKE 'S-%'`,
        )
      )[0].n,
      2000,
    );

    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 20, 2.50, 1.25, '2026-11-21 09:00:00',
      'T-' || g, 'streamed-op' FROM generate_series(2001, 2100) g`);
    await t.caughtUp();
    assert.equal(await meterDiff(), 0);
    await t.assertConverged();

    // `_op` is ODS metadata: the source column is not mirrored, its values are in the change log, ODS keeps its own.
    const clash = status().sink.odsColumns.find((c) => c.name === '_op');
    assert.equal(clash?.state, 'skipped');
    assert.match(clash?.detail ?? '', /taken by ODS metadata/);
    const logged = await t.q<{ op: string; ods_op: string }>(
      `SELECT l.row_data->>'_op' AS op, o._op AS ods_op FROM ods_change_log l
       JOIN ods_power_consumption o ON o.consumption_id = (l.row_data->>'consumption_id')::bigint
       WHERE l.table_name = 'power_consumption' AND l.row_data->>'consumption_id' = '2050'`,
    );
    assert.deepEqual(logged, [{ op: 'streamed-op', ods_op: 'I' }]);

    const equal = verifyOds();
    assert.equal(equal.code, 0, JSON.stringify(equal.report));
    await t.q(`UPDATE ods_power_consumption SET meter_id = 'WRONG' WHERE consumption_id = 1234`);
    const differs = verifyOds();
    assert.equal(differs.code, 1);
    const ods = differs.report.tables.find((x) => x.table === 'ods_power_consumption')!;
    assert.deepEqual(ods.different, ['1234']);
    assert.deepEqual(ods.counts, { missing: 0, extra: 0, different: 1 });

    // A repair re-reads the key from the source, extra columns included.
    const repair = runStategrid(
      ['verify', '--id', PIPELINE_ID, '--layer', 'ods', '--repair', '--json'],
      180000,
    );
    assert.equal(repair.status, 0, repair.stdout + repair.stderr);
    const fixed = await t.q<{ meter_id: string }>(
      `SELECT meter_id FROM ods_power_consumption WHERE consumption_id = 1234`,
    );
    assert.deepEqual(fixed, [{ meter_id: 'S-1234' }]);
    assert.equal(await meterDiff(), 0);
  });
});
