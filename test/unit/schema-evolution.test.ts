import assert from 'node:assert/strict';
import {
  describeStep,
  mirrorableType,
  planColumns,
  sharedExtraColumns,
  type OdsColumn,
  type SourceColumn,
  type TrackedColumn,
} from '../../src/schema/evolution';
import { CONSUMPTION_TABLE } from '../../src/schema/tables';
import {
  consumptionStatements,
  APPLY_CONSUMPTIONS,
  APPLY_CONSUMPTIONS_AT_CHECKPOINT,
} from '../../src/sink/dwd';
import { insertOds, recordsetOf, upsertOdsFromJson } from '../../src/sink/ods';
import { CREATE_STAGING, stagingTable } from '../../src/sink/snapshot-load';
import { verifiedOdsTables } from '../../src/sink/verify-sql';

/** Schema evolution of the ODS mirrors: the column decisions and the SQL built for extra columns. */

const SPEC_SOURCE: SourceColumn[] = [
  { name: 'consumption_id', type: 'bigint' },
  { name: 'user_id', type: 'bigint' },
  { name: 'consumption_amount', type: 'numeric(12,2)' },
  { name: 'consumption_cost', type: 'numeric(12,2)' },
  { name: 'consumption_date', type: 'timestamp(3) without time zone' },
];
const SPEC_ODS: [string, OdsColumn][] = [
  ['consumption_id', { type: 'bigint', notNull: true }],
  ['user_id', { type: 'bigint', notNull: false }],
  ['consumption_amount', { type: 'numeric(12,2)', notNull: false }],
  ['consumption_cost', { type: 'numeric(12,2)', notNull: false }],
  ['consumption_date', { type: 'timestamp(3) without time zone', notNull: false }],
  ['_lsn', { type: 'pg_lsn', notNull: false }],
  ['_op', { type: 'character(1)', notNull: true }],
  ['_synced_at', { type: 'timestamp with time zone', notNull: true }],
];

const ods = (...extra: [string, OdsColumn][]) => new Map<string, OdsColumn>([...SPEC_ODS, ...extra]);
const source = (...extra: SourceColumn[]) => [...SPEC_SOURCE, ...extra];
const tracked = (
  name: string,
  type: string | null,
  state: TrackedColumn['state'],
  detail: string | null = null,
) => ({
  name,
  type,
  state,
  detail,
});
const plan = (reported: SourceColumn[], t: TrackedColumn[], o: Map<string, OdsColumn>) =>
  planColumns(CONSUMPTION_TABLE, reported, t, o);

describe('schema evolution: column plan', () => {
  it('needs nothing while the source has exactly the spec columns', () => {
    assert.deepEqual(plan(source(), [], ods()), []);
  });

  it('adds a new source column with its type (and the default older rows read), once', () => {
    assert.deepEqual(plan(source({ name: 'meter_id', type: 'text' }), [], ods()), [
      { action: 'add', name: 'meter_id', type: 'text', missing: null },
    ]);
    assert.deepEqual(plan(source({ name: 'tariff', type: 'text', missing: "it's" }), [], ods()), [
      { action: 'add', name: 'tariff', type: 'text', missing: "it's" },
    ]);
    // A default PostgreSQL wrote into the older rows (a volatile one rewrites the table): added, marked unfilled.
    assert.deepEqual(plan(source({ name: 'stamp', type: 'text', defaultInRows: true }), [], ods()), [
      { action: 'add', name: 'stamp', type: 'text', missing: null, unfilled: true },
    ]);
    const mirrored = [tracked('meter_id', 'text', 'mirrored')];
    const withColumn = ods(['meter_id', { type: 'text', notNull: false }]);
    assert.deepEqual(plan(source({ name: 'meter_id', type: 'text' }), mirrored, withColumn), []);
  });

  it('reports a mirrored column gone from the source as dropped, dropping NOT NULL but never the key', () => {
    const mirrored = [tracked('meter_id', 'text', 'mirrored')];
    assert.deepEqual(plan(source(), mirrored, ods(['meter_id', { type: 'text', notNull: true }])), [
      { action: 'drop', name: 'meter_id', type: 'text', dropNotNull: true },
    ]);
    const withoutKey = source().filter((c) => c.name !== 'consumption_id');
    assert.deepEqual(plan(withoutKey, [], ods()), [
      { action: 'drop', name: 'consumption_id', type: 'bigint', dropNotNull: false },
    ]);
    // Reported once: a dropped column stays dropped without further steps.
    assert.deepEqual(plan(source(), [tracked('meter_id', 'text', 'dropped')], ods()), []);
  });

  it('adds anew a column re-added after a drop, of any type, and adopts an existing ODS column of its type', () => {
    const meter = { name: 'meter_id', type: 'text' };
    const existing = ods(['meter_id', { type: 'text', notNull: false }]);
    assert.deepEqual(plan(source(meter), [tracked('meter_id', 'text', 'dropped')], existing), [
      { action: 'add', name: 'meter_id', type: 'text', missing: null, replace: true },
    ]);
    const retyped = { name: 'meter_id', type: 'integer', missing: '7' };
    assert.deepEqual(plan(source(retyped), [tracked('meter_id', 'text', 'dropped')], existing), [
      { action: 'add', name: 'meter_id', type: 'integer', missing: '7', replace: true },
    ]);
    assert.deepEqual(plan(source(meter), [], existing), [
      { action: 'mirror', name: 'meter_id', type: 'text', detail: 'the ODS column already existed' },
    ]);
  });

  it('skips, with the reason, names of ODS metadata, unknown and odd types, and type conflicts', () => {
    const steps = plan(
      source(
        { name: '_lsn', type: 'text' },
        { name: '_valid', type: 'boolean' },
        { name: 'gone_meanwhile', type: null },
        { name: 'mood', type: 'audit."Mood"' },
        { name: 'code', type: 'integer' },
        { name: 'tariff', type: 'numeric(8,3)' },
      ),
      [tracked('tariff', 'numeric(6,2)', 'mirrored')],
      ods(['code', { type: 'text', notNull: false }], ['tariff', { type: 'numeric(6,2)', notNull: false }]),
    );
    assert.deepEqual(
      steps.map((s) => [s.action, s.name, s.action === 'skip' ? s.detail : '']),
      [
        ['skip', '_lsn', 'the name is taken by ODS metadata'],
        ['skip', '_valid', 'the name is taken by ODS metadata'],
        ['skip', 'gone_meanwhile', 'its type is unknown (no longer in the source catalog)'],
        ['skip', 'mood', 'type audit."Mood" cannot be mirrored'],
        ['skip', 'code', 'the ODS column has type text, the source integer'],
        ['skip', 'tariff', 'its type changed at the source from numeric(6,2) to numeric(8,3)'],
      ],
    );
    // The same skip is not reported again and again.
    assert.deepEqual(
      plan(
        source({ name: '_lsn', type: 'text' }),
        [tracked('_lsn', 'text', 'skipped', 'the name is taken by ODS metadata')],
        ods(),
      ),
      [],
    );
  });

  it('keeps a mirrored column whose type the stream cannot tell (wal2json, column dropped since)', () => {
    const mirrored = [tracked('meter_id', 'text', 'mirrored')];
    const withColumn = ods(['meter_id', { type: 'text', notNull: false }]);
    assert.deepEqual(plan(source({ name: 'meter_id', type: null }), mirrored, withColumn), []);
  });

  it('describes each step for the log, naming the change log where values stay', () => {
    assert.match(
      describeStep('power_consumption', 'ods_power_consumption', {
        action: 'skip',
        name: '_op',
        type: 'text',
        detail: 'the name is taken by ODS metadata',
      }),
      /power_consumption\._op \(text\) is not mirrored .*ods_change_log/,
    );
    assert.match(
      describeStep('power_consumption', 'ods_power_consumption', {
        action: 'drop',
        name: 'meter_id',
        type: 'text',
        dropNotNull: false,
      }),
      /dropped at the source: kept in ods_power_consumption as a nullable column/,
    );
  });
});

describe('schema evolution: types and shared columns', () => {
  it('accepts format_type text of built-in types and nothing that could carry SQL', () => {
    for (const t of [
      'text',
      'integer',
      'character varying(20)',
      'numeric(12,2)',
      'timestamp(3) without time zone',
      'time with time zone',
      'double precision',
      'integer[]',
      'character varying(10)[]',
      'jsonb',
      'bit varying(5)',
      'interval year to month',
      'time(3) with time zone',
    ])
      assert.ok(mirrorableType(t), t);
    for (const t of [
      null,
      '',
      '"Mood"',
      'audit.mood',
      'text; DROP TABLE ods_power_consumption',
      'text)',
      "text DEFAULT 'x'",
      'text not null',
      'interval year to month(3) extra',
      'Text',
      'numeric(12,2',
      'text -- comment',
    ])
      assert.ok(!mirrorableType(t), String(t));
  });

  it('lists the extra columns both sides have with the same type, sorted by name', () => {
    const shared = sharedExtraColumns(
      CONSUMPTION_TABLE,
      source(
        { name: 'z', type: 'text' },
        { name: 'meter_id', type: 'text' },
        { name: 'tariff', type: 'integer' },
      ),
      [
        ...SPEC_SOURCE,
        { name: 'meter_id', type: 'text' },
        { name: 'tariff', type: 'bigint' },
        { name: 'z', type: 'text' },
        { name: 'dropped_at_source', type: 'text' },
        { name: '_lsn', type: 'pg_lsn' },
      ],
    );
    assert.deepEqual(shared, [
      { name: 'meter_id', type: 'text' },
      { name: 'z', type: 'text' },
    ]);
  });
});

describe('schema evolution: SQL for extra columns', () => {
  const odd = [{ name: 'Meter "Id"', type: 'character varying(20)', mirrored: true }];

  it('quotes extra column names everywhere and reads them as text cast to their ODS type', () => {
    const upsert = upsertOdsFromJson('power_consumption', odd);
    assert.match(upsert, /INSERT INTO ods_power_consumption \(.*"Meter ""Id""".*_synced_at\)/);
    // The value, or the ODS row's own when the source did not send it.
    assert.match(
      upsert,
      /\(CASE WHEN 'Meter "Id"' = ANY\(r\._unsent\) THEN \(SELECT k\."Meter ""Id"""::text FROM ods_power_consumption k WHERE k\.consumption_id = \(coalesce\(r\._ods_key, r\.consumption_id::text\)\)::bigint\) ELSE "Meter ""Id""" END\)::character varying\(20\)/,
    );
    assert.match(upsert, /r\(.*_unsent text\[\], _ods_key text\)/);
    const dropped = upsertOdsFromJson('power_consumption', [{ ...odd[0], mirrored: false }]);
    assert.match(dropped, /\("Meter ""Id"""\)::character varying\(20\)/);
    assert.doesNotMatch(dropped, /_unsent/);
    assert.match(upsert, /r\(.*"Meter ""Id""" text.*\)/);
    assert.match(upsert, /"Meter ""Id""" = EXCLUDED\."Meter ""Id"""/);
    assert.match(
      recordsetOf('power_consumption', 'c', [], odd),
      /^c\(consumption_id bigint, .*"Meter ""Id""" text\)$/,
    );
    assert.match(CREATE_STAGING('power_consumption', odd), /"Meter ""Id""" text\) ON COMMIT DELETE ROWS$/);
    const [, consumption] = verifiedOdsTables({ power_user: [], power_consumption: odd });
    assert.match(consumption.source, /ROW\(consumption_id, .*consumption_date, "Meter ""Id"""\)::text/);
    assert.match(consumption.sink, /FROM ods_power_consumption$/);
  });

  it('keeps the spec-only SQL as it was and compiles the one-statement batch once per column list', () => {
    assert.doesNotMatch(insertOds('power_consumption', 'c', { upsert: true }), /"/);
    assert.equal(consumptionStatements([]).plain, APPLY_CONSUMPTIONS);
    assert.equal(consumptionStatements([]).atCheckpoint, APPLY_CONSUMPTIONS_AT_CHECKPOINT);
    const meter = { name: 'meter_id', type: 'text', mirrored: true };
    const first = consumptionStatements([meter]);
    assert.equal(consumptionStatements([{ ...meter }]), first);
    assert.notEqual(consumptionStatements([{ ...meter, mirrored: false }]), first);
    assert.match(first.plain.text, /\("meter_id"\)::text/);
    assert.match(first.plain.text, /CASE WHEN l\.op = 'U' AND NOT l\.row_data \? 'meter_id' THEN/);
    assert.deepEqual(first.atCheckpoint.names, APPLY_CONSUMPTIONS_AT_CHECKPOINT.names);
    // Each column list has its own staging table: a session keeps its temp tables between snapshots.
    assert.equal(stagingTable('power_consumption'), 'stategrid_stage_power_consumption');
    assert.notEqual(stagingTable('power_consumption', odd), stagingTable('power_consumption'));
  });
});
