import { PgoutputPlugin, Wal2JsonPlugin } from 'pg-logical-replication';
import type { AbstractPlugin } from 'pg-logical-replication/dist/output-plugins/abstract.plugin';
import { PgoutputRowReader } from './pgoutput-rows';
import {
  isSourceTable,
  parseLsn,
  PRIMARY_KEY,
  SOURCE_TABLES,
  type ColumnRef,
  type Row,
  type SourceTable,
  type StreamEvent,
} from './changes';

/** Turns each output plugin's messages into the plugin-independent StreamEvent. */
export type Decoder = {
  plugin: AbstractPlugin & { parsed: number };
  decode(message: unknown): StreamEvent;
};

const text = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));

/** Unix-epoch microseconds as ISO text with all six fractional digits: a Date would keep milliseconds only. */
function microsToIso(us: bigint | null | undefined): string | null {
  if (!us) return null;
  const micros = BigInt(us);
  const fraction = (micros % 1_000_000n).toString().padStart(6, '0');
  return `${new Date(Number(micros / 1_000_000n) * 1000).toISOString().slice(0, 19)}.${fraction}Z`;
}

/**
 * The library parses a message when it arrives and queues it for the data handler: the count of parsed messages
 * tells the stream whether anything received is still waiting to be handled. Row changes are read by our own
 * reader (see pgoutput-rows.ts), everything else by the library.
 */
class CountingPgoutputPlugin extends PgoutputPlugin {
  parsed = 0;
  private readonly rows = new PgoutputRowReader();
  parse(buffer: Buffer) {
    this.parsed += 1;
    const change = this.rows.read(buffer);
    if (change) return change;
    const message = super.parse(buffer);
    if (message.tag === 'relation') this.rows.learn(message);
    return message;
  }
}

const BARE_NUMBER_VALUE = /(?<!\\)"value":(-?\d[\d.eE+-]*)/g;

/**
 * wal2json writes bigint and numeric values as bare JSON numbers; JSON.parse would round them through doubles.
 * Quoting them first keeps the exact text (an escaped quote inside a string value is never matched).
 * (wal2json 2.5 has no option to print numerics as strings, so NaN arrives as null: see README, Known limits.)
 */
class ExactWal2JsonPlugin extends Wal2JsonPlugin {
  parsed = 0;
  parse(buffer: Buffer) {
    this.parsed += 1;
    return JSON.parse(buffer.toString().replace(BARE_NUMBER_VALUE, '"value":"$1"'));
  }
}

type PgoutputRelation = { columns: { name: string; typeOid: number; typeMod: number }[] };

/**
 * Tells when a table's column list is new to the stream: its first change, and the first change after pgoutput
 * sent a Relation message with other columns or types (it sends one after every ALTER TABLE, and again for
 * unrelated cache invalidations). The library makes a new relation object per Relation message, so the common
 * case is one identity comparison per change.
 */
class PgoutputColumnWatch {
  private readonly relation = new Map<SourceTable, PgoutputRelation>();
  private readonly signature = new Map<SourceTable, string>();

  changed(table: SourceTable, relation: PgoutputRelation): ColumnRef[] | undefined {
    if (this.relation.get(table) === relation) return undefined;
    this.relation.set(table, relation);
    const refs = relation.columns.map((c) => ({ name: c.name, typeOid: c.typeOid, typmod: c.typeMod }));
    const signature = JSON.stringify(refs);
    if (this.signature.get(table) === signature) return undefined;
    this.signature.set(table, signature);
    return refs;
  }
}

export function pgoutputDecoder(publication: string): Decoder {
  const plugin = new CountingPgoutputPlugin({
    protoVersion: 1,
    publicationNames: [publication],
    messages: true,
  });
  const watch = new PgoutputColumnWatch();
  return {
    plugin,
    decode(message) {
      const m = message as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      switch (m.tag) {
        case 'begin':
          return { type: 'begin', txLsn: parseLsn(m.commitLsn), commitTime: microsToIso(m.commitTime) };
        case 'commit':
          return { type: 'commit', endLsn: parseLsn(m.commitEndLsn) };
        case 'insert':
        case 'update':
        case 'delete': {
          const table = m.relation.name as string;
          if (!isSourceTable(m.relation.schema, table)) return { type: 'skip' };
          const op = m.tag === 'insert' ? 'I' : m.tag === 'update' ? 'U' : 'D';
          const row: Row = op === 'D' ? (m.old ?? m.key) : m.new;
          const pk = PRIMARY_KEY[table];
          const before = m.key?.[pk] ?? m.old?.[pk] ?? null;
          const oldKey = op === 'U' && before !== null && before !== row[pk] ? before : undefined;
          return { type: 'change', table, op, row, oldKey, columns: watch.changed(table, m.relation) };
        }
        case 'truncate': {
          const tables = (m.relations as { schema: string; name: string }[])
            .filter((r) => isSourceTable(r.schema, r.name))
            .map((r) => r.name as SourceTable);
          return tables.length ? { type: 'truncate', tables } : { type: 'skip' };
        }
        case 'message':
          return {
            type: 'message',
            lsn: m.messageLsn ? parseLsn(m.messageLsn) : 0n,
            prefix: m.prefix,
            transactional: !!m.transactional,
          };
        default:
          return { type: 'skip' };
      }
    },
  };
}

type Wal2JsonColumn = { name: string; value: unknown };

function wal2jsonRow(columns: Wal2JsonColumn[] | undefined): Row {
  const row: Row = {};
  for (const c of columns ?? []) row[c.name] = text(c.value);
  return row;
}

/**
 * Tells when a table's column names are new to the stream (wal2json sends no types: we do not ask for them, which
 * would lengthen every change). An insert carries every column, so any other list counts; an update leaves out
 * unchanged TOASTed values, so there only a name the stream has not seen counts. Deletes carry the key only.
 */
class Wal2jsonColumnWatch {
  private readonly known = new Map<SourceTable, string[]>();

  changed(table: SourceTable, op: 'I' | 'U', columns: Wal2JsonColumn[]): ColumnRef[] | undefined {
    const known = this.known.get(table);
    if (known && sameNames(known, columns)) return undefined;
    if (known && op === 'U' && columns.every((c) => known.includes(c.name))) return undefined;
    const names = columns.map((c) => c.name);
    this.known.set(table, op === 'U' && known ? [...new Set([...known, ...names])] : names);
    return names.map((name) => ({ name, typeOid: null, typmod: null }));
  }
}

function sameNames(known: string[], columns: Wal2JsonColumn[]): boolean {
  if (known.length !== columns.length) return false;
  for (let i = 0; i < known.length; i++) if (known[i] !== columns[i].name) return false;
  return true;
}

/** wal2json format 2: one JSON object per change, with B/C records carrying the transaction's LSNs. */
export function wal2jsonDecoder(): Decoder {
  const plugin = new ExactWal2JsonPlugin({
    formatVersion: '2',
    includeLsn: true,
    includeTimestamp: true,
    includeTypes: false,
    includeTransaction: true,
    addTables: SOURCE_TABLES.map((t) => `public.${t}`).join(','),
    actions: 'insert,update,delete,truncate',
  });
  const watch = new Wal2jsonColumnWatch();
  return {
    plugin,
    decode(message) {
      const m = message as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      switch (m.action) {
        case 'B':
          return {
            type: 'begin',
            txLsn: parseLsn(m.nextlsn),
            // PostgreSQL's own text (microseconds and offset), cast by the sink: a Date would drop the microseconds.
            commitTime: m.timestamp ? String(m.timestamp) : null,
          };
        case 'C':
          return { type: 'commit', endLsn: parseLsn(m.nextlsn) };
        case 'I':
        case 'U':
        case 'D': {
          const table = m.table as string;
          if (!isSourceTable(m.schema, table)) return { type: 'skip' };
          const pk = PRIMARY_KEY[table];
          const identity = wal2jsonRow(m.identity);
          const row = m.action === 'D' ? identity : wal2jsonRow(m.columns);
          const before = identity[pk] ?? null;
          const oldKey = m.action === 'U' && before !== null && before !== row[pk] ? before : undefined;
          const columns = m.action === 'D' ? undefined : watch.changed(table, m.action, m.columns ?? []);
          return { type: 'change', table, op: m.action, row, oldKey, columns };
        }
        case 'T':
          return isSourceTable(m.schema, m.table)
            ? { type: 'truncate', tables: [m.table] }
            : { type: 'skip' };
        case 'M':
          return {
            type: 'message',
            lsn: m.lsn ? parseLsn(m.lsn) : 0n,
            prefix: m.prefix,
            transactional: !!m.transactional,
          };
        default:
          return { type: 'skip' };
      }
    },
  };
}

export function decoderFor(plugin: 'pgoutput' | 'wal2json', publication: string): Decoder {
  return plugin === 'pgoutput' ? pgoutputDecoder(publication) : wal2jsonDecoder();
}
