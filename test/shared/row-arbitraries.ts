import fc from 'fast-check';
import type { Row } from '../../src/cdc/changes';

/**
 * Generators of source rows with awkward text and numerics, shared by the property tests (unit tier) and the
 * SQL-versus-TypeScript validation test (integration tier).
 */
const DIGITS = [...'0123456789'];
export const digits = (minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...DIGITS), minLength, maxLength });

/** Code points ECMAScript counts as white space or line terminators (what String.prototype.trim strips). */
export const WHITESPACE_CODE_POINTS = [
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
  0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff,
];
const WHITESPACE = WHITESPACE_CODE_POINTS.map((c) => String.fromCodePoint(c));
/** Invisible or space-like characters that are not white space. */
const NOT_WHITESPACE = ['\u200b', '\u180e', '\u0085', '\u2060', '\u200d', '\u0000', '\u00ad'];

const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));

/** Awkward text: grapheme clusters (CJK, emoji, combining marks), raw code points, lone surrogates, blanks. */
export const anyText: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({
    unit: fc.oneof(fc.constantFrom(...WHITESPACE, ...NOT_WHITESPACE, 'a', '张', '€', '👩‍👩‍👧'), loneSurrogate),
    maxLength: 8,
  }),
);

const EXTREME_NUMERICS = [
  '9999999999.99',
  '-9999999999.99',
  '-0.00',
  '-0',
  '-000.0',
  '0',
  '0.00',
  '-0.01',
  '1e309',
  '1e2',
  'NaN',
  'nan',
  '-NaN',
  'Infinity',
  '-Infinity',
  '12345678901.00',
  '0.001',
  '+1.00',
  '.50',
  '1.',
  '1..0',
  '1.2.3',
  '',
  ' ',
  ' 1.00',
  '1.00 ',
  '1.00\n',
  '１.００',
  '٣.٠٠',
  '0x10',
  '1_000.00',
  '1,00',
  '9'.repeat(400),
  '0.' + '0'.repeat(300) + '1',
  '-' + '0'.repeat(500),
];

/** Text shaped like a decimal: optional sign, 0-12 integer digits, optional fraction of 0-3 digits. */
export const numericShaped = fc
  .tuple(fc.constantFrom('', '', '', '-', '+'), digits(0, 12), fc.option(digits(0, 3), { nil: null }))
  .map(([sign, int, frac]) => sign + int + (frac === null ? '' : '.' + frac));

export const hugeDigits = fc
  .tuple(fc.boolean(), digits(11, 500), fc.option(digits(1, 60), { nil: null }))
  .map(([neg, int, frac]) => (neg ? '-' : '') + int + (frac === null ? '' : '.' + frac));

/** What a NUMERIC(12,2) column can print, plus the legal-but-odd forms the rule accepts (zero padding, -0). */
export const validAmount = fc.oneof(
  fc
    .tuple(digits(1, 10), fc.option(digits(1, 2), { nil: null }))
    .map(([int, frac]) => int + (frac === null ? '' : '.' + frac)),
  fc.constantFrom('-0', '-0.00', '-000.0', '0.00', '9999999999.99'),
);

export const extremeNumeric = fc.oneof(fc.constantFrom(...EXTREME_NUMERICS), numericShaped, hugeDigits);

export const amount = fc.oneof(
  { weight: 5, arbitrary: validAmount },
  { weight: 3, arbitrary: numericShaped },
  { weight: 2, arbitrary: extremeNumeric },
  { weight: 1, arbitrary: anyText },
);

export const int8Text = fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n).map(String);
export const int4Text = fc.integer({ min: -2147483648, max: 2147483647 }).map(String);
export const timestampText = fc.oneof(
  fc
    .date({
      min: new Date('0001-01-01T00:00:00Z'),
      max: new Date('9999-12-31T23:59:59Z'),
      noInvalidDate: true,
    })
    .map((d) => d.toISOString().replace('T', ' ').replace('Z', '')),
  fc.constantFrom('infinity', '-infinity', '0044-03-15 12:00:00 BC', '2026-11-20 10:00:00'),
);

/** A column that is present with a value (usually), null, or absent from the row altogether. */
const ABSENT = undefined;
function column(value: fc.Arbitrary<string>): fc.Arbitrary<string | null | undefined> {
  return fc.oneof(
    { weight: 10, arbitrary: value },
    { weight: 1, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.constant(ABSENT) },
  );
}

/** Extra columns the rules must ignore (prefixed so they never collide with real ones or with __proto__). */
const extraColumns = fc
  .array(fc.tuple(anyText, fc.option(anyText, { nil: null })), { maxLength: 3 })
  .map((pairs) => pairs.map(([k, v]) => ['x_' + k, v] as const));

function buildRow(
  known: Record<string, string | null | undefined>,
  extra: readonly (readonly [string, string | null])[],
): Row {
  const row: Row = {};
  for (const [k, v] of extra) row[k] = v;
  for (const [k, v] of Object.entries(known)) if (v !== ABSENT) row[k] = v;
  return row;
}

export const consumptionRow = fc
  .tuple(
    fc.record({
      consumption_id: column(int8Text),
      user_id: column(fc.oneof(int8Text, anyText)),
      consumption_amount: column(amount),
      consumption_cost: column(amount),
      consumption_date: column(fc.oneof(timestampText, anyText)),
    }),
    extraColumns,
  )
  .map(([known, extra]) => buildRow(known, extra));

const blankText = fc.string({ unit: fc.constantFrom(...WHITESPACE), maxLength: 6 });
const userName = fc.oneof(
  anyText,
  blankText,
  fc.tuple(blankText, anyText, blankText).map(([a, b, c]) => a + b + c),
  fc.constantFrom('张三', ' 李四 ', '\u3000', '\u200b', 'Ωμέγα', 'e\u0301', '👩‍👩‍👧'),
);

export const userRow = fc
  .tuple(
    fc.record({
      user_id: column(int8Text),
      user_name: column(userName),
      usage_type: column(anyText),
      region_id: column(fc.oneof(int4Text, anyText)),
      region_name: column(fc.oneof(anyText, fc.constantFrom('北京', '上海', ''))),
      update_time: column(timestampText),
    }),
    extraColumns,
  )
  .map(([known, extra]) => buildRow(known, extra));

/** Rows of no particular table: any mix of known and unknown columns holding any text or numeric. */
export const chaosRow = fc
  .tuple(
    fc.record({
      user_id: column(fc.oneof(anyText, extremeNumeric)),
      user_name: column(userName),
      region_id: column(fc.oneof(anyText, extremeNumeric)),
      region_name: column(anyText),
      consumption_amount: column(fc.oneof(anyText, extremeNumeric)),
      consumption_cost: column(fc.oneof(anyText, extremeNumeric)),
      consumption_date: column(anyText),
    }),
    extraColumns,
  )
  .map(([known, extra]) => buildRow(known, extra));
