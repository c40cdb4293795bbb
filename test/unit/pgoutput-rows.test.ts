import assert from 'node:assert/strict';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { decoderFor } from '../../src/cdc/decoders';
import { PgoutputRowReader } from '../../src/cdc/pgoutput-rows';
import { keepValuesAsText } from '../../src/db/client';

// pgoutput protocol 1 messages, built as PostgreSQL sends them.
const cstring = (s: string) => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};

const OID = 16400;
const COLUMNS: [string, number][] = [
  ['user_id', 20],
  ['user_name', 1043],
  ['usage_type', 1043],
  ['region_id', 23],
  ['region_name', 1043],
  ['update_time', 1114],
];

function relationMessage(): Buffer {
  return Buffer.concat([
    Buffer.from('R'),
    int32(OID),
    cstring('public'),
    cstring('power_user'),
    Buffer.from('d'),
    int16(COLUMNS.length),
    ...COLUMNS.map(([name, type], i) =>
      Buffer.concat([Buffer.from([i === 0 ? 1 : 0]), cstring(name), int32(type), int32(-1)]),
    ),
  ]);
}

/** A TupleData: a string is a text value, null a NULL, 'u' (as { unchanged }) an unchanged TOASTed value. */
type Value = string | null | { unchanged: true };
function tuple(values: Value[]): Buffer {
  return Buffer.concat([
    int16(values.length),
    ...values.map((v) => {
      if (v === null) return Buffer.from('n');
      if (typeof v === 'object') return Buffer.from('u');
      const bytes = Buffer.from(v, 'utf8');
      return Buffer.concat([Buffer.from('t'), int32(bytes.length), bytes]);
    }),
  ]);
}
const message = (tag: string, ...parts: (string | Buffer)[]) =>
  Buffer.concat([
    Buffer.from(tag),
    int32(OID),
    ...parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)),
  ]);

const full: Value[] = ['42', '国网用户 张三', 'residential', '3', 'Region 3', '2026-11-25 10:11:12.345'];
const changed: Value[] = ['43', 'O\'Brien "quoted"', null, '4', 'Region 4', { unchanged: true }];
const keyOnly: Value[] = ['42', null, null, null, null, null];

/** Each message, and the columns of its new row whose value was not sent (left out of our row). */
const MESSAGES: [string, Buffer, string[]?][] = [
  ['insert, UTF-8 text', message('I', 'N', tuple(full))],
  ['insert with a NULL', message('I', 'N', tuple(['44', 'x', null, '1', 'r', null]))],
  ['update, new tuple only', message('U', 'N', tuple(full))],
  [
    'update of the key (K then N, an unchanged TOASTed value)',
    message('U', 'K', tuple(keyOnly), 'N', tuple(changed)),
    ['update_time'],
  ],
  ['update under REPLICA IDENTITY FULL (O then N)', message('U', 'O', tuple(full), 'N', tuple(changed))],
  ['delete by key', message('D', 'K', tuple(keyOnly))],
  ['delete under REPLICA IDENTITY FULL', message('D', 'O', tuple(full))],
];

/** The library's own parse, its tuples copied into rows of text as the decoder once did. */
function libraryRows(m: Record<string, unknown>) {
  const toRow = (t: unknown) =>
    t
      ? Object.fromEntries(
          Object.entries(t as Record<string, unknown>).map(([k, v]) => [
            k,
            v === null || v === undefined ? null : String(v),
          ]),
        )
      : null;
  return { tag: m.tag, new: toRow(m.new), old: toRow(m.old), key: toRow(m.key) };
}

describe('pgoutput row reader', () => {
  before(keepValuesAsText);

  it('reads every row change form as the library does, into rows of text, leaving out values not sent', () => {
    const library = new PgoutputPlugin({ protoVersion: 1, publicationNames: ['p'] });
    const reader = new PgoutputRowReader();
    reader.learn(library.parse(relationMessage()) as Pgoutput.MessageRelation);
    for (const [name, buf, unsent = []] of MESSAGES) {
      const ours = reader.read(buf);
      assert.ok(ours, name);
      const row = (t: unknown) => (t === undefined ? null : t);
      const oursRows = {
        tag: ours.tag,
        new: row('new' in ours ? ours.new : undefined),
        old: row('old' in ours ? ours.old : undefined),
        key: row('key' in ours ? ours.key : undefined),
      };
      // The library gives a value it was not sent as null; we leave it out (ODS keeps what it has).
      const expected = libraryRows(library.parse(buf) as unknown as Record<string, unknown>);
      for (const column of unsent) {
        assert.equal(expected.new?.[column], null, `${name}: the library's ${column}`);
        delete expected.new?.[column];
      }
      assert.deepEqual(oursRows, expected, name);
    }
  });

  it('leaves other messages, and changes of relations not yet seen, to the library', () => {
    const reader = new PgoutputRowReader();
    assert.equal(reader.read(message('I', 'N', tuple(full))), undefined, 'unknown relation');
    assert.equal(reader.read(relationMessage()), undefined, 'a Relation message');
    const commit = Buffer.concat([Buffer.from('C'), Buffer.alloc(1 + 8 + 8 + 8)]);
    assert.equal(reader.read(commit), undefined, 'a Commit message');
  });

  it('gives the decoder the same change events, with the old key of a key update', () => {
    const { plugin, decode } = decoderFor('pgoutput', 'p');
    decode(plugin.parse(relationMessage()));
    const insert = decode(plugin.parse(message('I', 'N', tuple(full))));
    assert.deepEqual(insert, {
      type: 'change',
      table: 'power_user',
      op: 'I',
      row: {
        user_id: '42',
        user_name: '国网用户 张三',
        usage_type: 'residential',
        region_id: '3',
        region_name: 'Region 3',
        update_time: '2026-11-25 10:11:12.345',
      },
      oldKey: undefined,
      columns: COLUMNS.map(([name, typeOid]) => ({ name, typeOid, typmod: -1 })),
    });
    const keyUpdate = decode(plugin.parse(message('U', 'K', tuple(keyOnly), 'N', tuple(changed))));
    assert.equal(keyUpdate.type === 'change' && keyUpdate.oldKey, '42');
    assert.ok(
      keyUpdate.type === 'change' && !('update_time' in keyUpdate.row),
      'an unsent value is left out',
    );
    const deleted = decode(plugin.parse(message('D', 'K', tuple(keyOnly))));
    assert.deepEqual(deleted.type === 'change' && deleted.row, { user_id: '42' });
    assert.equal(plugin.parsed, 4);
  });

  it('names the relation of a value it cannot read', () => {
    const library = new PgoutputPlugin({ protoVersion: 1, publicationNames: ['p'] });
    const reader = new PgoutputRowReader();
    reader.learn(library.parse(relationMessage()) as Pgoutput.MessageRelation);
    const binary = message('I', 'N', Buffer.concat([int16(1), Buffer.from('b'), int32(1), Buffer.from([7])]));
    assert.throws(() => reader.read(binary), /unexpected value kind b in power_user/);
  });
});
