import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  formatLsn,
  parseLsn,
  PRIMARY_KEY,
  type Row,
  type SourceTable,
  type StreamEvent,
} from '../../src/cdc/changes';
import { pgoutputDecoder, wal2jsonDecoder } from '../../src/cdc/decoders';
import { consumptionInvalidReason, invalidReason, userInvalidReason } from '../../src/cdc/validate';
import {
  digits,
  WHITESPACE_CODE_POINTS,
  anyText,
  numericShaped,
  hugeDigits,
  validAmount,
  extremeNumeric,
  amount,
  int8Text,
  int4Text,
  timestampText,
  consumptionRow,
  userRow,
  chaosRow,
} from '../shared/row-arbitraries';

/**
 * Property-based tests of the pure CDC code: LSN text, the validity rules of docs/data-semantics.md#validity against an
 * independently written oracle, and both decoders fed with generated plugin output (pgoutput as real protocol
 * bytes through the library's parser, wal2json format 2 as JSON text through the decoder's parse).
 * No database or Temporal is involved.
 */

const RUNS = { numRuns: 500 };
const U64_MAX = 2n ** 64n - 1n;
const TABLES: SourceTable[] = ['power_user', 'power_consumption'];

// ---------------------------------------------------------------------------------------------------------------
// Independent oracle of docs/data-semantics.md#validity (written without regular expressions or String.prototype.trim)

const WHITESPACE_SET = new Set(WHITESPACE_CODE_POINTS);

/** NUMERIC(12,2) text: optional '-', 1..10 digits, optionally '.' and 1..2 digits; >= 0 (so only -0 may be signed). */
function oracleAmountValid(v: string | null | undefined): boolean {
  if (v === null || v === undefined) return false;
  const chars = Array.from(v);
  let i = 0;
  const negative = chars[0] === '-';
  if (negative) i = 1;
  let intDigits = 0;
  let fracDigits = 0;
  let seenPoint = false;
  let nonZero = false;
  for (; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === '.') {
      if (seenPoint) return false;
      seenPoint = true;
      continue;
    }
    const code = ch.codePointAt(0) ?? -1;
    if (code < 0x30 || code > 0x39) return false; // also rules out NaN, Infinity, exponents, '+'
    if (code !== 0x30) nonZero = true;
    if (seenPoint) fracDigits++;
    else intDigits++;
  }
  if (intDigits < 1 || intDigits > 10) return false;
  if (seenPoint && (fracDigits < 1 || fracDigits > 2)) return false;
  return !(negative && nonZero);
}

const present = (v: string | null | undefined): v is string => v !== null && v !== undefined;

function oracleConsumptionFailures(row: Row): string[] {
  const failing: string[] = [];
  if (!present(row.user_id)) failing.push('user_id');
  if (!present(row.consumption_date)) failing.push('consumption_date');
  if (!oracleAmountValid(row.consumption_amount)) failing.push('consumption_amount');
  if (!oracleAmountValid(row.consumption_cost)) failing.push('consumption_cost');
  return failing;
}

function oracleBlank(s: string): boolean {
  for (const ch of s) if (!WHITESPACE_SET.has(ch.codePointAt(0) ?? -1)) return false;
  return true;
}

function oracleUserFailures(row: Row): string[] {
  const failing: string[] = [];
  if (!present(row.user_name) || oracleBlank(row.user_name)) failing.push('user_name');
  if (!present(row.region_id)) failing.push('region_id');
  if (!present(row.region_name)) failing.push('region_name');
  return failing;
}

// ---------------------------------------------------------------------------------------------------------------
// pgoutput protocol encoder (the messages PostgreSQL sends; decoded by pg-logical-replication's parser)

type Col = { name: string; oid: number; typmod: number; key: boolean };
const NUMERIC_12_2_TYPMOD = ((12 << 16) | 2) + 4;
const COLUMNS: Record<SourceTable, Col[]> = {
  power_user: [
    { name: 'user_id', oid: 20, typmod: -1, key: true },
    { name: 'user_name', oid: 1043, typmod: 104, key: false },
    { name: 'usage_type', oid: 1043, typmod: 24, key: false },
    { name: 'region_id', oid: 23, typmod: -1, key: false },
    { name: 'region_name', oid: 1043, typmod: 54, key: false },
    { name: 'update_time', oid: 1114, typmod: 3, key: false },
  ],
  power_consumption: [
    { name: 'consumption_id', oid: 20, typmod: -1, key: true },
    { name: 'user_id', oid: 20, typmod: -1, key: false },
    { name: 'consumption_amount', oid: 1700, typmod: NUMERIC_12_2_TYPMOD, key: false },
    { name: 'consumption_cost', oid: 1700, typmod: NUMERIC_12_2_TYPMOD, key: false },
    { name: 'consumption_date', oid: 1114, typmod: 3, key: false },
  ],
};

const UNCHANGED_TOAST = Symbol('unchanged toast');
type Cell = string | null | typeof UNCHANGED_TOAST;

class Wire {
  private readonly chunks: Buffer[] = [];
  byte(c: string | number): this {
    this.chunks.push(Buffer.from([typeof c === 'string' ? c.charCodeAt(0) : c]));
    return this;
  }
  i16(n: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(n);
    this.chunks.push(b);
    return this;
  }
  i32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    this.chunks.push(b);
    return this;
  }
  u64(n: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    this.chunks.push(b);
    return this;
  }
  cstr(s: string): this {
    this.chunks.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
    return this;
  }
  tuple(cells: Cell[]): this {
    this.i16(cells.length);
    for (const cell of cells) {
      if (cell === null) this.byte('n');
      else if (cell === UNCHANGED_TOAST) this.byte('u');
      else {
        const bytes = Buffer.from(cell, 'utf8');
        this.byte('t').i32(bytes.length);
        this.chunks.push(bytes);
      }
    }
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function relationMessage(relid: number, schema: string, name: string, cols: Col[], identity: 'd' | 'f') {
  const w = new Wire().byte('R').i32(relid).cstr(schema).cstr(name).byte(identity).i16(cols.length);
  for (const c of cols)
    w.byte(c.key ? 1 : 0)
      .cstr(c.name)
      .i32(c.oid)
      .i32(c.typmod);
  return w.done();
}

/** A key-only tuple as PostgreSQL sends it: the key columns, null placeholders for the rest. */
const keyTuple = (cols: Col[], values: (string | null)[]): Cell[] =>
  cols.map((c, i) => (c.key ? values[i] : null));

/** Value generators by type OID, in PostgreSQL's text output form. Text never contains NUL (PostgreSQL forbids it). */
const noNul = (s: string) => !s.includes('\u0000');
const ADVERSARIAL_TEXT = [
  '","value":12345678901234567890,"x":"',
  '\\',
  '\\"value":1',
  '"value":-0.5e3',
  'Robert"); DROP TABLE power_user;--',
  '\u3000',
  '𠜎𠜱𠝹',
];
const varcharText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(...ADVERSARIAL_TEXT, '张三', 'e\u0301', '👩‍👩‍👧', ''),
);
/** numeric_out shapes: optional '-', digits, optional fraction (any precision: the decoder must not care). */
const numericOut = fc.oneof(
  validAmount,
  hugeDigits,
  fc
    .tuple(fc.boolean(), digits(1, 30), fc.option(digits(1, 20), { nil: null }))
    .map(([neg, int, frac]) => (neg ? '-' : '') + int + (frac === null ? '' : '.' + frac)),
);
const valueFor = (oid: number, forWal2json = false): fc.Arbitrary<string> => {
  switch (oid) {
    case 20:
      return int8Text;
    case 23:
      return int4Text;
    case 1700:
      // wal2json prints NaN as JSON null (it is not a JSON number), so NaN is generated for pgoutput only;
      // pgoutput sends any text, so it also gets the odd decimal shapes.
      return forWal2json ? numericOut : fc.oneof(numericOut, numericShaped, fc.constant('NaN'));
    case 1114:
      return timestampText;
    default:
      return varcharText.filter(noNul);
  }
};

const rowValues = (cols: Col[], forWal2json = false) =>
  fc.tuple(
    ...cols.map((c) =>
      c.key ? valueFor(c.oid, forWal2json) : fc.option(valueFor(c.oid, forWal2json), { nil: null, freq: 4 }),
    ),
  ) as fc.Arbitrary<(string | null)[]>;

const toRow = (cols: Col[], values: (string | null)[]): Row =>
  Object.fromEntries(cols.map((c, i) => [c.name, values[i]]));

function assertTextRow(row: Row) {
  for (const [k, v] of Object.entries(row)) {
    assert.ok(v === null || typeof v === 'string', `column ${k} decoded as ${typeof v}: ${String(v)}`);
  }
}

function assertSameBytes(actual: Row, expected: Row, cols: Col[]) {
  for (const c of cols) {
    const a = actual[c.name];
    const e = expected[c.name];
    if (c.oid === 1043 && typeof e === 'string') {
      assert.ok(typeof a === 'string' && Buffer.from(a, 'utf8').equals(Buffer.from(e, 'utf8')), c.name);
    }
  }
}

type Scenario = {
  table: SourceTable;
  kind: 'insert' | 'update-new' | 'update-key' | 'update-old' | 'delete-key' | 'delete-old';
  oldValues: (string | null)[];
  newValues: (string | null)[];
  sameKey: boolean;
  toast: boolean[];
};

const scenario = (forWal2json: boolean): fc.Arbitrary<Scenario> =>
  fc.constantFrom(...TABLES).chain((table) => {
    const cols = COLUMNS[table];
    return fc.record({
      table: fc.constant(table),
      kind: fc.constantFrom<Scenario['kind']>(
        'insert',
        'update-new',
        'update-key',
        'update-old',
        'delete-key',
        'delete-old',
      ),
      oldValues: rowValues(cols, forWal2json),
      newValues: rowValues(cols, forWal2json),
      sameKey: fc.boolean(),
      toast: fc.array(fc.boolean(), { minLength: cols.length, maxLength: cols.length }),
    });
  });

/**
 * What a correct decoder must produce for a scenario: row (all text), and oldKey only for a key-changing update.
 * With `toasted`, the new tuple of an update with the full old row marks the `toast` columns unchanged ('u'), and
 * the decoded row must carry their old values.
 */
function expectedChange(s: Scenario, toasted = false) {
  const cols = COLUMNS[s.table];
  const pk = PRIMARY_KEY[s.table];
  const oldValues = s.oldValues;
  const newValues = s.sameKey ? [oldValues[0], ...s.newValues.slice(1)] : s.newValues;
  const oldRow = toRow(cols, oldValues);
  const newRow = toRow(
    cols,
    newValues.map((v, i) => (toasted && s.kind === 'update-old' && isToasted(s, i) ? oldValues[i] : v)),
  );
  const op = s.kind === 'insert' ? 'I' : s.kind.startsWith('update') ? 'U' : 'D';
  const row = s.kind === 'delete-key' ? { [pk]: oldRow[pk] } : s.kind === 'delete-old' ? oldRow : newRow;
  const oldKeyKnown = s.kind === 'update-key' || s.kind === 'update-old';
  const oldKey = oldKeyKnown && oldRow[pk] !== newRow[pk] ? oldRow[pk] : undefined;
  return { cols, pk, oldValues, newValues, op, row, oldKey };
}

const isToasted = (s: Scenario, i: number) => !COLUMNS[s.table][i].key && s.toast[i];

function pgoutputChangeMessage(relid: number, s: Scenario): Buffer {
  const { cols, oldValues, newValues } = expectedChange(s);
  // Unchanged TOASTed values ('u') are generated only next to a full old tuple, where the parser fills them in.
  const newWithToast: Cell[] = newValues.map((v, i) => (isToasted(s, i) ? UNCHANGED_TOAST : v));
  const w = new Wire();
  switch (s.kind) {
    case 'insert':
      return w.byte('I').i32(relid).byte('N').tuple(newValues).done();
    case 'update-new':
      return w.byte('U').i32(relid).byte('N').tuple(newValues).done();
    case 'update-key':
      return w
        .byte('U')
        .i32(relid)
        .byte('K')
        .tuple(keyTuple(cols, oldValues))
        .byte('N')
        .tuple(newValues)
        .done();
    case 'update-old':
      return w.byte('U').i32(relid).byte('O').tuple(oldValues).byte('N').tuple(newWithToast).done();
    case 'delete-key':
      return w.byte('D').i32(relid).byte('K').tuple(keyTuple(cols, oldValues)).done();
    case 'delete-old':
      return w.byte('D').i32(relid).byte('O').tuple(oldValues).done();
  }
}

/** wal2json format 2 text: bigint, int and numeric values are bare JSON numbers, the rest JSON strings. */
function wal2jsonColumns(cols: Col[], values: (string | null)[], only?: (c: Col) => boolean): string {
  const parts: string[] = [];
  cols.forEach((c, i) => {
    if (only && !only(c)) return;
    const v = values[i];
    const json = v === null ? 'null' : [20, 23, 1700].includes(c.oid) ? v : JSON.stringify(v);
    parts.push(`{"name":${JSON.stringify(c.name)},"value":${json}}`);
  });
  return `[${parts.join(',')}]`;
}

function wal2jsonChangeText(schema: string, table: string, s: Scenario): string {
  const { cols, oldValues, newValues } = expectedChange(s);
  const head = `{"action":"${s.kind === 'insert' ? 'I' : s.kind.startsWith('update') ? 'U' : 'D'}","schema":${JSON.stringify(schema)},"table":${JSON.stringify(table)}`;
  const key = (c: Col) => c.key;
  switch (s.kind) {
    case 'insert':
      return `${head},"columns":${wal2jsonColumns(cols, newValues)}}`;
    case 'update-new': // no old tuple: identity from the new tuple's key, or none at all
      return s.sameKey
        ? `${head},"columns":${wal2jsonColumns(cols, newValues)},"identity":${wal2jsonColumns(cols, newValues, key)}}`
        : `${head},"columns":${wal2jsonColumns(cols, newValues)}}`;
    case 'update-key':
      return `${head},"columns":${wal2jsonColumns(cols, newValues)},"identity":${wal2jsonColumns(cols, oldValues, key)}}`;
    case 'update-old':
      return `${head},"columns":${wal2jsonColumns(cols, newValues)},"identity":${wal2jsonColumns(cols, oldValues)}}`;
    case 'delete-key':
      return `${head},"identity":${wal2jsonColumns(cols, oldValues, key)}}`;
    case 'delete-old':
      return `${head},"identity":${wal2jsonColumns(cols, oldValues)}}`;
  }
}

/** (schema, table) pairs that are not the two watched source tables, including near misses. */
const otherRelation = fc
  .tuple(
    fc.oneof(
      fc.constantFrom('public', 'Public', 'PUBLIC', 'public ', 'audit', 'ods', 'pg_temp_3', '公共'),
      fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter(noNul),
    ),
    fc.oneof(
      fc.constantFrom(
        'power_user',
        'power_consumption',
        'Power_User',
        'POWER_CONSUMPTION',
        'power_user ',
        'power_users',
        'ods_power_user',
        'dwd_power_consumption_detail',
        'power_user\u200b',
        'stategrid_checkpoint',
      ),
      fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter(noNul),
    ),
  )
  .filter(([schema, name]) => !(schema === 'public' && (TABLES as string[]).includes(name)));

// ---------------------------------------------------------------------------------------------------------------

describe('property: LSN text', () => {
  it('formatLsn/parseLsn round-trip every 64-bit position, in PostgreSQL X/X form', () => {
    fc.assert(
      fc.property(fc.bigInt(0n, U64_MAX), (lsn) => {
        const text = formatLsn(lsn);
        assert.match(text, /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/);
        assert.equal(parseLsn(text), lsn);
      }),
      { numRuns: 1000 },
    );
  });

  it('parses any pg_lsn text PostgreSQL prints, in either case and with zero padding, order-preserving', () => {
    const half = fc.tuple(fc.bigInt(0n, 0xffffffffn), fc.boolean(), fc.boolean());
    const show = ([v, pad, lower]: [bigint, boolean, boolean]) => {
      const hex = v.toString(16).padStart(pad ? 8 : 1, '0');
      return lower ? hex.toLowerCase() : hex.toUpperCase();
    };
    fc.assert(
      fc.property(half, half, fc.bigInt(0n, U64_MAX), (hi, lo, other) => {
        const lsn = parseLsn(`${show(hi)}/${show(lo)}`);
        assert.equal(lsn, (hi[0] << 32n) + lo[0]);
        assert.equal(formatLsn(lsn), `${hi[0].toString(16)}/${lo[0].toString(16)}`.toUpperCase());
        assert.equal(lsn < other, parseLsn(formatLsn(lsn)) < parseLsn(formatLsn(other)));
      }),
      RUNS,
    );
  });

  it('rejects text without a slash with an Error instead of returning a position', () => {
    const noSlash = fc
      .oneof(
        anyText,
        fc.bigInt(0n, U64_MAX).map((v) => v.toString(16)),
        fc.constantFrom('', '0', 'FFFFFFFF', '1A-FF00AB12', '1A\\FF00AB12', '1A∕FF00AB12', '1A／FF00AB12'),
      )
      .filter((s) => !s.includes('/'));
    fc.assert(
      fc.property(noSlash, (s) => {
        assert.throws(
          () => parseLsn(s),
          (e: unknown) => e instanceof Error && /invalid LSN/.test(e.message),
        );
      }),
      RUNS,
    );
  });

  it('never returns a negative position: any text with a slash parses to a 64-bit value or throws an Error', () => {
    const slashed = fc.oneof(
      fc.tuple(anyText, anyText).map(([a, b]) => `${a}/${b}`),
      fc
        .tuple(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF-+ x'), maxLength: 10 }), anyText)
        .map(([a, b]) => `${a}/${b}`),
    );
    fc.assert(
      fc.property(slashed, (s) => {
        let lsn: bigint;
        try {
          lsn = parseLsn(s);
        } catch (e) {
          assert.ok(e instanceof Error);
          return;
        }
        assert.equal(typeof lsn, 'bigint');
        assert.ok(lsn >= 0n, `${JSON.stringify(s)} parsed to ${lsn}`);
      }),
      RUNS,
    );
  });
});

/** The implementation agrees with the oracle on every row, and its reason names a column the oracle rejects. */
function agreesWithOracle(
  rows: fc.Arbitrary<Row>,
  oracle: (row: Row) => string[],
  reasonOf: (row: Row) => string | null,
): void {
  let valid = 0;
  let invalid = 0;
  fc.assert(
    fc.property(rows, (row) => {
      const failing = oracle(row);
      const reason = reasonOf(row);
      assert.equal(reason === null, failing.length === 0, `reason ${String(reason)} vs oracle [${failing}]`);
      if (reason === null) valid++;
      else {
        invalid++;
        assert.ok(
          failing.some((col) => reason.includes(col)),
          `reason "${reason}" names none of the failing columns [${failing}]`,
        );
      }
    }),
    { numRuns: 1000 },
  );
  assert.ok(valid > 50 && invalid > 50, `both outcomes exercised (valid ${valid}, invalid ${invalid})`);
}

describe('property: validity rules', () => {
  it('are total: any row of any table yields null or a non-empty reason, never an exception', () => {
    fc.assert(
      fc.property(fc.constantFrom(...TABLES), fc.oneof(chaosRow, userRow, consumptionRow), (table, row) => {
        const snapshot = JSON.stringify(row);
        const reason = invalidReason(table, row);
        assert.ok(reason === null || (typeof reason === 'string' && reason.length > 0), String(reason));
        const specific = table === 'power_user' ? userInvalidReason(row) : consumptionInvalidReason(row);
        assert.equal(reason, specific);
        assert.equal(invalidReason(table, row), reason, 'deterministic');
        assert.equal(JSON.stringify(row), snapshot, 'the row is not modified');
      }),
      { numRuns: 1000 },
    );
  });

  it('accept a consumption exactly when the independent oracle does, and name a failing column otherwise', () =>
    agreesWithOracle(consumptionRow, oracleConsumptionFailures, consumptionInvalidReason));

  it('agree with the oracle on every amount alone, in a row that is otherwise valid', () => {
    const base = { user_id: '1', consumption_date: '2026-11-20 10:00:00', consumption_cost: '1.50' };
    fc.assert(
      fc.property(fc.oneof(amount, extremeNumeric, anyText), fc.boolean(), (value, asCost) => {
        const row: Row = asCost
          ? { ...base, consumption_amount: '0.00', consumption_cost: value }
          : { ...base, consumption_amount: value };
        assert.equal(
          consumptionInvalidReason(row) === null,
          oracleAmountValid(value),
          `amount ${JSON.stringify(value)}`,
        );
      }),
      { numRuns: 1000 },
    );
  });

  it('accept a user exactly when the independent oracle does, and name a failing column otherwise', () =>
    agreesWithOracle(userRow, oracleUserFailures, userInvalidReason));
});

/** What both decoders must give for a source-table change: text-only row, key kept, oldKey only on key change. */
function assertDecodedChange(
  ev: StreamEvent,
  s: Scenario,
  expected: ReturnType<typeof expectedChange>,
): void {
  if (ev.type !== 'change') assert.fail(`expected a change, got ${ev.type}`);
  assert.equal(ev.table, s.table);
  assert.equal(ev.op, expected.op);
  assertTextRow(ev.row);
  assert.equal(ev.row[expected.pk], expected.row[expected.pk], 'primary key kept');
  assert.notEqual(ev.row[expected.pk], null);
  assert.deepEqual(ev.row, expected.row);
  assert.equal(ev.oldKey, expected.oldKey);
  assertSameBytes(ev.row, expected.row, expected.cols);
}

describe('property: pgoutput decoder', () => {
  it('decodes source-table changes to text-only rows with the key kept and oldKey only on key changes', () => {
    fc.assert(
      fc.property(scenario(false), fc.constantFrom<'d' | 'f'>('d', 'f'), (s, identity) => {
        const decoder = pgoutputDecoder('stategrid_pub');
        const expected = expectedChange(s, true);
        const relid = 16384;
        decoder.plugin.parse(relationMessage(relid, 'public', s.table, expected.cols, identity));
        const ev = decoder.decode(decoder.plugin.parse(pgoutputChangeMessage(relid, s)));
        assertDecodedChange(ev, s, expected);
      }),
      RUNS,
    );
  });

  it('skips changes to every other table or schema, and truncates only the source tables', () => {
    fc.assert(
      fc.property(
        otherRelation,
        scenario(false),
        fc.shuffledSubarray([0, 1, 2, 3]),
        fc.boolean(),
        ([schema, name], s, truncated, sameSchemaRelation) => {
          const decoder = pgoutputDecoder('stategrid_pub');
          const cols = COLUMNS[s.table];
          // 1, 2: the source tables; 3, 4: other relations (one with the scenario's columns).
          decoder.plugin.parse(relationMessage(1, 'public', 'power_user', COLUMNS.power_user, 'd'));
          decoder.plugin.parse(
            relationMessage(2, 'public', 'power_consumption', COLUMNS.power_consumption, 'd'),
          );
          decoder.plugin.parse(relationMessage(3, schema, name, cols, 'f'));
          decoder.plugin.parse(relationMessage(4, 'public', name, cols, 'd'));
          const other = sameSchemaRelation && !(TABLES as string[]).includes(name) ? 4 : 3;
          const ev = decoder.decode(decoder.plugin.parse(pgoutputChangeMessage(other, s)));
          assert.deepEqual(ev, { type: 'skip' });

          const relids = truncated.map((i) => i + 1);
          const w = new Wire().byte('T').i32(relids.length).byte(0);
          for (const id of relids) w.i32(id);
          const tev = decoder.decode(decoder.plugin.parse(w.done()));
          const expectedTables = relids
            .filter((id) => id === 1 || id === 2 || (id === 4 && (TABLES as string[]).includes(name)))
            .map((id) => (id === 1 ? 'power_user' : id === 2 ? 'power_consumption' : name));
          assert.deepEqual(
            tev,
            expectedTables.length ? { type: 'truncate', tables: expectedTables } : { type: 'skip' },
          );
        },
      ),
      RUNS,
    );
  });

  it('carries begin/commit positions and commit time exactly', () => {
    const POSTGRES_EPOCH_MS = Date.UTC(2000, 0, 1);
    fc.assert(
      fc.property(
        fc.bigInt(1n, U64_MAX),
        fc.bigInt(1n, U64_MAX),
        fc.bigInt(0n, 200n * 365n * 86_400_000_000n),
        fc.integer({ min: -2147483648, max: 2147483647 }),
        (commitLsn, endLsn, micros, xid) => {
          const decoder = pgoutputDecoder('stategrid_pub');
          const begin = decoder.decode(
            decoder.plugin.parse(new Wire().byte('B').u64(commitLsn).u64(micros).i32(xid).done()),
          );
          assert.deepEqual(begin, {
            type: 'begin',
            txLsn: commitLsn,
            // Every microsecond kept: the change log's commit_time is the source's commit timestamp.
            commitTime:
              new Date(POSTGRES_EPOCH_MS + Number(micros / 1_000_000n) * 1000).toISOString().slice(0, 19) +
              `.${(micros % 1_000_000n).toString().padStart(6, '0')}Z`,
          });
          const commit = decoder.decode(
            decoder.plugin.parse(new Wire().byte('C').byte(0).u64(commitLsn).u64(endLsn).u64(micros).done()),
          );
          assert.deepEqual(commit, { type: 'commit', endLsn });
        },
      ),
      RUNS,
    );
  });
});

describe('property: wal2json decoder', () => {
  it('keeps bigint and numeric text exact and unicode intact, with the key kept and oldKey only on key changes', () => {
    const decoder = wal2jsonDecoder();
    fc.assert(
      fc.property(scenario(true), (s) => {
        const expected = expectedChange(s);
        const text = wal2jsonChangeText('public', s.table, s);
        const ev = decoder.decode(decoder.plugin.parse(Buffer.from(text, 'utf8')));
        // update-old carries no unchanged-TOAST marker in wal2json: the new row is complete.
        assertDecodedChange(ev, s, expected);
      }),
      RUNS,
    );
  });

  it('skips changes to every other table or schema', () => {
    const decoder = wal2jsonDecoder();
    fc.assert(
      fc.property(otherRelation, scenario(true), ([schema, name], s) => {
        const ev = decoder.decode(
          decoder.plugin.parse(Buffer.from(wal2jsonChangeText(schema, name, s), 'utf8')),
        );
        assert.deepEqual(ev, { type: 'skip' });
      }),
      RUNS,
    );
  });
});

describe('decoders: column lists of the source tables', () => {
  const consumption = COLUMNS.power_consumption;
  const meter: Col = { name: 'meter_id', oid: 25, typmod: -1, key: false };
  const values = ['1', '2', '3.00', '0.50', '2026-11-20 08:00:00'];
  const listOf = (ev: StreamEvent) => (ev.type === 'change' ? ev.columns : 'not a change');

  it('pgoutput: reports the list on the first change and after a Relation message that changes it', () => {
    const decoder = pgoutputDecoder('stategrid_pub');
    const insert = (cells: Cell[]) =>
      decoder.decode(decoder.plugin.parse(new Wire().byte('I').i32(7).byte('N').tuple(cells).done()));
    const relation = (cols: Col[]) =>
      decoder.plugin.parse(relationMessage(7, 'public', 'power_consumption', cols, 'd'));
    relation(consumption);
    const refs = (cols: Col[]) => cols.map((c) => ({ name: c.name, typeOid: c.oid, typmod: c.typmod }));
    assert.deepEqual(listOf(insert(values)), refs(consumption));
    assert.equal(listOf(insert(values)), undefined);
    relation(consumption); // sent again for an unrelated cache invalidation: same list, nothing to report
    assert.equal(listOf(insert(values)), undefined);
    relation([...consumption, meter]);
    assert.deepEqual(listOf(insert([...values, 'M-1'])), refs([...consumption, meter]));
    assert.equal(listOf(insert([...values, 'M-2'])), undefined);
    relation(consumption);
    assert.deepEqual(listOf(insert(values)), refs(consumption));
  });

  it('wal2json: names new to the stream on inserts; on updates only names it has not seen', () => {
    const decoder = wal2jsonDecoder();
    const change = (action: 'I' | 'U', cols: Col[]) =>
      decoder.decode(
        decoder.plugin.parse(
          Buffer.from(
            `{"action":"${action}","schema":"public","table":"power_consumption","columns":${wal2jsonColumns(cols, [...values, 'M-1'].slice(0, cols.length))}}`,
            'utf8',
          ),
        ),
      );
    const names = (cols: Col[]) => cols.map((c) => ({ name: c.name, typeOid: null, typmod: null }));
    const withMeter = [...consumption, meter];
    assert.deepEqual(listOf(change('I', consumption)), names(consumption));
    assert.equal(listOf(change('I', consumption)), undefined);
    assert.deepEqual(listOf(change('I', withMeter)), names(withMeter));
    // An update without meter_id may just leave an unchanged TOASTed value out: not a new list.
    assert.equal(listOf(change('U', consumption)), undefined);
    assert.equal(listOf(change('U', withMeter)), undefined);
    assert.deepEqual(listOf(change('I', consumption)), names(consumption));
    assert.deepEqual(listOf(change('U', withMeter)), names(withMeter));
  });
});
