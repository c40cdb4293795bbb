import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Row, SourceTable } from '../../src/cdc/changes';
import { batchesOf, SinkPropertyDb, writeBatches, type Emitted } from './helpers/sink-property';

/**
 * Property: an extra ODS column holds the source's value however its updates send it. An update may leave a
 * value out (PostgreSQL does not send a TOASTed value the update left unchanged): the ODS row then keeps the value
 * the model says the source row has, whether it was sent earlier in the same batch, in an earlier batch, or under
 * the key the row had before a key change, through every batch path (the one-statement consumption batch, one
 * written behind another, the statement-per-layer one). Changes go through the sink's own write paths into a
 * database of their own, with no worker; a small world (4 users, 6 consumption keys) makes chains of changes to
 * one key within a batch common.
 */
const DB = 'stategrid_ods_unsent_property';
const PIPELINE = 'ods_unsent_property';

/** A `notes` value an update sends, or 'unsent' (left out: the row keeps its value). */
type Notes = string | null | 'unsent';
type Command =
  | { k: 'user'; id: number; region: number; notes: Notes }
  | { k: 'dropUser'; id: number }
  | { k: 'use'; id: number; user: number; amount: string; notes: Notes }
  | { k: 'dropUse'; id: number }
  | { k: 'rekey'; id: number; to: number; notes: Notes }
  | { k: 'truncate'; tables: SourceTable[] };

type Step = { transactions: Command[][]; twoInFlight: boolean };
type Source = {
  users: Map<number, { region: number; notes: string | null }>;
  consumptions: Map<number, { user: number; amount: string; notes: string | null }>;
};

const notes: fc.Arbitrary<Notes> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<Notes>('unsent') },
  { weight: 2, arbitrary: fc.constantFrom('a', 'b', 'c', 'long ' + 'x'.repeat(40)) },
  { weight: 1, arbitrary: fc.constant(null) },
);
const userId = fc.integer({ min: 1, max: 4 });
const consumptionId = fc.integer({ min: 1, max: 6 });
const command = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('user'),
      id: userId,
      region: fc.integer({ min: 1, max: 2 }),
      notes,
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dropUser'), id: userId }) },
  {
    weight: 6,
    arbitrary: fc.record({
      k: fc.constant('use'),
      id: consumptionId,
      user: userId,
      amount: fc.constantFrom('1.00', '2.50'),
      notes,
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dropUse'), id: consumptionId }) },
  {
    weight: 2,
    arbitrary: fc.record({ k: fc.constant('rekey'), id: consumptionId, to: consumptionId, notes }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('truncate'),
      tables: fc.constantFrom<SourceTable[]>(['power_consumption'], ['power_user']),
    }),
  },
) as fc.Arbitrary<Command>;
const step: fc.Arbitrary<Step> = fc.record({
  transactions: fc.array(fc.array(command, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 3 }),
  twoInFlight: fc.boolean(),
});

/** The row the source streams: an update that does not send `notes` leaves the column out. */
const withNotes = (row: Row, sent: Notes): Row => (sent === 'unsent' ? row : { ...row, notes: sent });

/**
 * What a change of a row that held `before` sends as `notes` (an insert sends every value, so only an update can
 * leave it out), and what the source row holds afterwards.
 */
function notesAfter(before: { notes: string | null } | undefined, notes: Notes) {
  const sent = !before && notes === 'unsent' ? null : notes;
  return { sent, held: sent === 'unsent' ? before!.notes : sent };
}
const userRow = (id: number, region: number): Row => ({
  user_id: String(id),
  user_name: `u${id}`,
  usage_type: '居民用电',
  region_id: String(region),
  region_name: `r${region}`,
  update_time: '2026-11-20 00:00:00',
});
const consumptionRow = (id: number, user: number, amount: string): Row => ({
  consumption_id: String(id),
  user_id: String(user),
  consumption_amount: amount,
  consumption_cost: '0.10',
  consumption_date: '2026-11-20 10:00:00',
});

/** Applies a command to the model; returns the change the source streams for it (null: it changes nothing). */
function applyToModel(s: Source, c: Command): Emitted | null {
  switch (c.k) {
    case 'user': {
      const before = s.users.get(c.id);
      const { sent, held } = notesAfter(before, c.notes);
      s.users.set(c.id, { region: c.region, notes: held });
      const row = withNotes(userRow(c.id, c.region), sent);
      return { kind: 'row', table: 'power_user', op: before ? 'U' : 'I', row };
    }
    case 'dropUser':
      if (!s.users.delete(c.id)) return null;
      return { kind: 'row', table: 'power_user', op: 'D', row: { user_id: String(c.id) } };
    case 'use': {
      const before = s.consumptions.get(c.id);
      const { sent, held } = notesAfter(before, c.notes);
      s.consumptions.set(c.id, { user: c.user, amount: c.amount, notes: held });
      const row = withNotes(consumptionRow(c.id, c.user, c.amount), sent);
      return { kind: 'row', table: 'power_consumption', op: before ? 'U' : 'I', row };
    }
    case 'dropUse':
      if (!s.consumptions.delete(c.id)) return null;
      return { kind: 'row', table: 'power_consumption', op: 'D', row: { consumption_id: String(c.id) } };
    case 'rekey': {
      const before = s.consumptions.get(c.id);
      if (!before || s.consumptions.has(c.to)) return null;
      const { sent, held } = notesAfter(before, c.notes);
      s.consumptions.delete(c.id);
      s.consumptions.set(c.to, { ...before, notes: held });
      const row = withNotes(consumptionRow(c.to, before.user, before.amount), sent);
      return { kind: 'row', table: 'power_consumption', op: 'U', row, oldKey: String(c.id) };
    }
    case 'truncate':
      if (c.tables.includes('power_consumption')) s.consumptions.clear();
      if (c.tables.includes('power_user')) s.users.clear();
      return { kind: 'truncate', tables: c.tables };
  }
}

const use = (id: number, sent: Notes): Command => ({ k: 'use', id, user: 1, amount: '1.00', notes: sent });
const rekey = (id: number, to: number): Command => ({ k: 'rekey', id, to, notes: 'unsent' });
const alone = (...transactions: Command[][]): Step => ({ transactions, twoInFlight: false });

/**
 * Cases run first every time. A key changed twice in one batch without its value: the value is under the first
 * key, in ODS; the same after the value was sent under the middle key in that batch.
 */
const EXAMPLES: Step[][] = [
  [alone([use(1, 'a')]), alone([rekey(1, 2), rekey(2, 3)])],
  [alone([use(1, 'a')]), alone([rekey(1, 2), use(2, 'b'), rekey(2, 3), use(3, 'unsent')])],
];

const paths = { batches: 0, behind: 0, unsent: 0 };

describe('property: extra ODS values an update does not send', function () {
  this.timeout(600000);
  const db = new SinkPropertyDb(DB);
  const pool = db.pool;
  // The column in both ODS tables, recorded as the sink records one it mirrors (kept between cases).
  before(() =>
    db.open(
      `ALTER TABLE ods_power_consumption ADD COLUMN IF NOT EXISTS notes text;
       ALTER TABLE ods_power_user ADD COLUMN IF NOT EXISTS notes text;
       INSERT INTO stategrid_ods_column (table_name, column_name, column_type, state)
       VALUES ('power_consumption', 'notes', 'text', 'mirrored'), ('power_user', 'notes', 'text', 'mirrored')
       ON CONFLICT DO NOTHING`,
      ['stategrid_ods_column'],
    ),
  );
  after(() => db.close());

  const odsNotes = async (table: string, key: string) =>
    (
      await pool.query<{ k: string; notes: string | null }>(
        `SELECT ${key}::text AS k, notes FROM ${table} ORDER BY 1`,
      )
    ).rows;
  const modelNotes = (m: Map<number, { notes: string | null }>) =>
    [...m]
      .map(([k, v]) => ({ k: String(k), notes: v.notes }))
      .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));

  it('keeps in ODS the value the source row has, sent or not, on every batch path', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), async (steps) => {
        const sink = await db.freshSink(PIPELINE);
        const source: Source = { users: new Map(), consumptions: new Map() };
        const lsn = { at: 0x1000000n };
        for (const st of steps) {
          const emitted = st.transactions.map((tx) =>
            tx.map((c) => applyToModel(source, c)).filter((e) => e !== null),
          );
          paths.unsent += emitted
            .flat()
            .filter((e) => e.kind === 'row' && e.op === 'U' && !('notes' in e.row)).length;
          await writeBatches(sink, batchesOf(sink, emitted, lsn, st.twoInFlight), paths);
        }
        const when = JSON.stringify(steps);
        assert.deepEqual(
          await odsNotes('ods_power_consumption', 'consumption_id'),
          modelNotes(source.consumptions),
          `consumption notes after ${when}`,
        );
        assert.deepEqual(
          await odsNotes('ods_power_user', 'user_id'),
          modelNotes(source.users),
          `user notes after ${when}`,
        );
      }),
      { numRuns: 300, examples: EXAMPLES.map((steps) => [steps]) },
    );
    assert.ok(paths.unsent > 0 && paths.behind > 0, `paths exercised: ${JSON.stringify(paths)}`);
  });
});
