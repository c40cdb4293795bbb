import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { cellText, columnsOf, displayWidth, formatTable } from '../../src/cli/output';

describe('CLI output: psql-style tables', () => {
  it('aligns columns under a centred header and a separator, numbers right, with a row count', () => {
    const out = formatTable([
      { region_id: 1, region_name: 'north', user_count: 12 },
      { region_id: 10, region_name: 'south-east', user_count: 3 },
    ]);
    assert.equal(
      out,
      [
        ' region_id | region_name | user_count',
        '-----------+-------------+------------',
        '         1 | north       |         12',
        '        10 | south-east  |          3',
        '(2 rows)',
      ].join('\n'),
    );
  });

  it('centres a header narrower than its column', () => {
    assert.deepEqual(
      formatTable([{ a: 12345, bb: 'x' }])
        .split('\n')
        .slice(0, 2),
      ['   a   | bb', '-------+----'],
    );
  });

  it('prints no index column and no quotes around strings', () => {
    const out = formatTable([{ name: "it's", note: 'a "b"' }]);
    assert.equal(out.split('\n')[2], ` it's | a "b"`);
    assert.doesNotMatch(out, /\(index\)|'it/);
  });

  it('says (1 row) for one row and (0 rows) for none', () => {
    assert.match(formatTable([{ a: 1 }]), /\n\(1 row\)$/);
    assert.equal(formatTable([]), '(0 rows)');
    assert.equal(
      formatTable([], [{ name: 'a' }, { name: 'bb' }]),
      [' a | bb', '---+----', '(0 rows)'].join('\n'),
    );
  });

  it('right-aligns numeric pg types that arrive as strings (numeric, bigint)', () => {
    const fields = [
      { name: 'id', dataTypeID: 20 },
      { name: 'total', dataTypeID: 1700 },
      { name: 'day', dataTypeID: 25 },
    ];
    const cols = columnsOf(fields);
    assert.deepEqual(
      cols.map((c) => c.align),
      ['right', 'right', 'left'],
    );
    const out = formatTable(
      [
        { id: '7', total: '1234.50', day: '2026-11-21' },
        { id: '12', total: '3.10', day: '2026-11-22' },
      ],
      cols,
    );
    assert.deepEqual(out.split('\n').slice(2, 4), [
      '  7 | 1234.50 | 2026-11-21',
      ' 12 |    3.10 | 2026-11-22',
    ]);
  });

  it('shows null as empty, booleans as t/f, and keeps the column order of the given columns', () => {
    const out = formatTable([{ b: null, a: true }], [{ name: 'a' }, { name: 'b' }]);
    assert.deepEqual(out.split('\n'), [' a | b', '---+---', ' t |', '(1 row)']);
    assert.equal(cellText(false), 'f');
    assert.equal(cellText(undefined), '');
    assert.equal(cellText({ x: 1 }), '{"x":1}');
    assert.equal(cellText(new Date('2026-11-21T01:02:03Z')), '2026-11-21T01:02:03.000Z');
    assert.equal(cellText('two\nlines'), 'two\\nlines');
  });

  it('a column with text values is left-aligned even when some look like numbers', () => {
    const out = formatTable([{ v: 'x' }, { v: 42 }]);
    assert.deepEqual(out.split('\n').slice(2, 4), [' x', ' 42']);
  });

  it('counts wide (CJK) characters as two columns', () => {
    assert.equal(displayWidth('居民用电'), 8);
    assert.equal(displayWidth('abc'), 3);
    const out = formatTable([
      { usage_type: '居民用电', n: 1 },
      { usage_type: 'x', n: 2 },
    ]);
    assert.deepEqual(out.split('\n').slice(0, 4), [
      ' usage_type | n',
      '------------+---',
      ' 居民用电   | 1',
      ' x          | 2',
    ]);
  });
});

describe('CLI output: --json runs', () => {
  it('keep stdout for the JSON document; result lines and console.log go to stderr', () => {
    const output = path.resolve(__dirname, '../../src/cli/output.js');
    const script = `
      const o = require(${JSON.stringify(output)});
      o.say('before');
      o.jsonOutput();
      o.say('progress');
      console.log('library chatter');
      o.printJson({ ok: true, n: [1, 2] });`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'before\n' + JSON.stringify({ ok: true, n: [1, 2] }, null, 2) + '\n');
    assert.equal(r.stderr, 'progress\nlibrary chatter\n');
  });
});
