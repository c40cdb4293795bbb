/**
 * Micro-benchmark of the worker's streaming path without a stack: pgoutput messages as the walsender sends them
 * (a Relation, then 1,000-row transactions of consumption inserts) go through the plugin's parse, the decoder, the
 * change building of the replication stream and `prepareConsumptions`, in 5,000-change batches, and pg's encoding
 * of the batch statement's parameters into its Bind message (where a string built piece by piece is flattened). It
 * prints the median CPU (user + system of this process) per row of each stage, so a change to that path can be
 * compared in seconds (run it with the worker's own V8 flags):
 *
 *   node --max-semi-space-size=16 dist/bench/worker-path.js [rows, default 100000] [rounds, default 9]
 *
 * What it leaves out: the socket, the library's message queue and event emitter, the sink's round trips.
 *
 * With a young generation larger than a round allocates, no collection runs inside a stage and it also prints the
 * heap's growth per row of each stage, what the stage allocates (garbage included):
 *
 *   node --min-semi-space-size=1024 --max-semi-space-size=1024 dist/bench/worker-path.js 20000 3
 */
import { createRequire } from 'node:module';
import v8 from 'node:v8';
import { decoderFor } from '../src/cdc/decoders';
import type { Change } from '../src/cdc/changes';
import { nextRowChange, type OpenTransaction } from '../src/cdc/replication-stream';
import { consumptionStatements } from '../src/sink/dwd';
import { prepareConsumptions } from '../src/sink/writer';
import { boundQuery } from '../src/db/sql';
import { percentile } from './common';

const RELATION_OID = 16390;
const COLUMNS: [name: string, typeOid: number, flags: number][] = [
  ['consumption_id', 20, 1],
  ['user_id', 20, 0],
  ['consumption_amount', 1700, 0],
  ['consumption_cost', 1700, 0],
  ['consumption_date', 1114, 0],
];

/** A pgoutput message: its one-byte tag, then the fields in network byte order. */
class MessageWriter {
  private parts: Buffer[] = [];
  private fixed(size: number, write: (b: Buffer) => void) {
    const b = Buffer.alloc(size);
    write(b);
    this.parts.push(b);
    return this;
  }
  byte(v: number) {
    return this.fixed(1, (b) => b.writeUInt8(v));
  }
  int16(v: number) {
    return this.fixed(2, (b) => b.writeInt16BE(v));
  }
  int32(v: number) {
    return this.fixed(4, (b) => b.writeInt32BE(v));
  }
  int64(v: bigint) {
    return this.fixed(8, (b) => b.writeBigInt64BE(v));
  }
  cstring(s: string) {
    this.parts.push(Buffer.from(s + '\0'));
    return this;
  }
  text(s: string) {
    const b = Buffer.from(s);
    this.byte(0x74).int32(b.length);
    this.parts.push(b);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function relationMessage(): Buffer {
  const w = new MessageWriter().byte(0x52).int32(RELATION_OID).cstring('public').cstring('power_consumption');
  w.byte(0x64).int16(COLUMNS.length);
  for (const [name, typeOid, flags] of COLUMNS) w.byte(flags).cstring(name).int32(typeOid).int32(-1);
  return w.done();
}

/** Microseconds since 2000-01-01, as pgoutput sends times. */
const PG_EPOCH_OFFSET_US = 946_684_800_000_000n;

function transaction(lsn: bigint, firstId: number, rows: number): Buffer[] {
  const time = BigInt(Date.UTC(2026, 10, 26, 8)) * 1000n - PG_EPOCH_OFFSET_US;
  const out = [new MessageWriter().byte(0x42).int64(lsn).int64(time).int32(1000).done()];
  for (let i = 0; i < rows; i++) {
    const id = firstId + i;
    const w = new MessageWriter().byte(0x49).int32(RELATION_OID).byte(0x4e).int16(COLUMNS.length);
    w.text(String(id)).text(String(1 + (id % 2000)));
    w.text(`${(id % 997) + 0.25}`).text(`${(id % 991) + 0.5}`);
    w.text(`2026-11-${String(1 + (id % 25)).padStart(2, '0')} 0${id % 10}:15:00.123`);
    out.push(w.done());
  }
  out.push(
    new MessageWriter()
      .byte(0x43)
      .byte(0)
      .int64(lsn)
      .int64(lsn + 100n)
      .int64(time)
      .done(),
  );
  return out;
}

type Stages = { parse: number; decode: number; prepare: number; encode: number };
type StageCpu = Stages & { allocated: Stages };

/**
 * One round, stage by stage over all messages (so each figure is one stage's CPU, not interleaved with the others'
 * garbage): the plugin's parse; the decoder plus what ReplicationStream does with each event (number the changes of
 * a transaction); prepareConsumptions over 5,000-change batches; the Bind message of each batch's statement, as pg
 * sends it. Returns CPU µs per row of each stage.
 */
function runRound(messages: Buffer[], batchRows: number): StageCpu {
  const decoder = decoderFor('pgoutput', 'bench_pub');
  let t = cpuMicros();
  let h = heapUsed();
  const parsed = messages.map((buf) => decoder.plugin.parse(buf));
  const parse = cpuMicros() - t;
  const parseBytes = heapUsed() - h;

  t = cpuMicros();
  h = heapUsed();
  let tx: OpenTransaction | null = null;
  const changes: Change[] = [];
  for (const message of parsed) {
    const ev = decoder.decode(message);
    if (ev.type === 'begin') tx = { lsn: ev.txLsn, seq: 0, commitTime: ev.commitTime };
    else if (ev.type === 'commit') tx = null;
    else if (ev.type === 'change' && tx) changes.push(nextRowChange(tx, ev));
  }
  const decode = cpuMicros() - t;
  const decodeBytes = heapUsed() - h;

  t = cpuMicros();
  h = heapUsed();
  const batches = [];
  for (let i = 0; i < changes.length; i += batchRows) {
    const prepared = prepareConsumptions(changes.slice(i, i + batchRows));
    if (!prepared) throw new Error('batch not prepared');
    batches.push(prepared);
  }
  const prepare = cpuMicros() - t;
  const prepareBytes = heapUsed() - h;

  t = cpuMicros();
  h = heapUsed();
  const stmt = consumptionStatements([]).newKeysAtCheckpoint;
  for (const prepared of batches) {
    const query = boundQuery(stmt, { ...CHECKPOINT_VALUES, ...prepared.params });
    serialize.bind({ statement: query.name, values: query.values, valueMapper: pgUtils.prepareValue });
  }
  const encode = cpuMicros() - t;
  const encodeBytes = heapUsed() - h;
  const rows = changes.length;
  return {
    parse: parse / rows,
    decode: decode / rows,
    prepare: prepare / rows,
    encode: encode / rows,
    allocated: {
      parse: parseBytes / rows,
      decode: decodeBytes / rows,
      prepare: prepareBytes / rows,
      encode: encodeBytes / rows,
    },
  };
}

/**
 * pg's own Bind serializer and conversion of a query's values (arrays, dates, buffers), loaded as pg loads them:
 * neither is a dependency of ours or typed as pg exports them.
 */
const fromPg = createRequire(require.resolve('pg'));
const { serialize } = fromPg('pg-protocol') as {
  serialize: {
    bind(config: { statement: string; values: unknown[]; valueMapper: (v: unknown) => unknown }): Buffer;
  };
};
const pgUtils = fromPg('./utils') as { prepareValue: (value: unknown) => unknown };

/** The checkpoint parameters of the batch statement, alike for every batch (their encoding is not per row). */
const CHECKPOINT_VALUES = {
  pipeline_id: 'bench',
  epoch: '1',
  first_lsn: '1/0',
  first_seq: 1,
  commit_lsn: '1/10',
  seq: 1000,
  confirmed_lsn: '1/20',
  changes: 5000,
  max_event_time: '2026-11-26 08:00:00',
};

/** Bytes in use on the heap (see the header: a stage's growth is its allocation when no collection ran in it). */
const heapUsed = () => v8.getHeapStatistics().used_heap_size;

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

const median = (values: number[]) => percentile(values, 0.5);

function main() {
  const rows = Number(process.argv[2] ?? 100_000);
  const rounds = Number(process.argv[3] ?? 9);
  const messages = [relationMessage()];
  for (let id = 1, lsn = 0x1_0000_0000n; id <= rows; id += 1000, lsn += 0x10000n)
    messages.push(...transaction(lsn, id, Math.min(1000, rows - id + 1)));
  const results: StageCpu[] = [];
  for (let r = 0; r < rounds; r++) results.push(runRound(messages, 5000));
  const stages = ['parse', 'decode', 'prepare', 'encode'] as const;
  const medians = stages.map((s) => median(results.map((r) => r[s])));
  const total = median(results.map((r) => r.parse + r.decode + r.prepare + r.encode));
  console.log(`${rows} rows, ${rounds} rounds; median CPU per row (µs):`);
  console.log(stages.map((s, i) => `${s} ${medians[i].toFixed(2)}`).join(', ') + `; all ${total.toFixed(2)}`);
  // A round's allocations fit in the young generation only when it is much larger than the messages need.
  const newSpace = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  if (newSpace < rows * 4096) {
    console.log('allocation per row: needs a young generation of 4 KB per row (see the header)');
    return;
  }
  const bytes = stages.map((s) => median(results.map((r) => r.allocated[s])));
  console.log(
    'median heap allocated per row (bytes): ' +
      stages.map((s, i) => `${s} ${bytes[i].toFixed(0)}`).join(', ') +
      `; all ${bytes.reduce((a, b) => a + b, 0).toFixed(0)}`,
  );
}

main();
