/** The decoded, plugin-independent change model shared by the change source and the batch sink. */
import type { SourceColumn } from '../schema/evolution';
import { PRIMARY_KEY, SOURCE_TABLES, type SourceTable } from '../schema/tables';

export { PRIMARY_KEY, SOURCE_TABLES, type SourceColumn, type SourceTable };

/** Column values keep PostgreSQL's text form: numerics and timestamps are never turned into JS numbers or Dates. */
export type Row = Record<string, string | null>;

export type RowChange = {
  kind: 'row';
  table: SourceTable;
  op: 'I' | 'U' | 'D';
  /**
   * New row for I/U; for D the old key (and the old row where replica identity gives it). An update's row leaves
   * out the columns whose value the source did not send (a TOASTed value the update left unchanged).
   */
  row: Row;
  /** Set when an update changed the primary key: the key the row had before. */
  oldKey?: string;
  /**
   * Set on the first change of its table in a stream session and whenever the table's columns differ from the
   * previous list the stream saw (ALTER TABLE at the source): the table's columns with their types.
   */
  columns?: SourceColumn[];
};

export type TruncateChange = { kind: 'truncate'; tables: SourceTable[] };

export type Change = (RowChange | TruncateChange) & {
  /** Transaction position: commit ordering key, identical for all changes of one source transaction. */
  txLsn: bigint;
  /** Position of the change within its transaction, from 1. */
  seq: number;
  commitTime: string | null;
};

/**
 * A column as the output plugin names it: pgoutput's Relation message gives its type OID and modifier, wal2json
 * (types not requested) only the name.
 */
export type ColumnRef = { name: string; typeOid: number | null; typmod: number | null };

/** What the decoder hands the capture loop. `columns`: the table's column list, when it is new to the stream. */
export type StreamEvent =
  | { type: 'begin'; txLsn: bigint; commitTime: string | null }
  | {
      type: 'change';
      table: SourceTable;
      op: 'I' | 'U' | 'D';
      row: Row;
      oldKey?: string;
      columns?: ColumnRef[];
    }
  | { type: 'truncate'; tables: SourceTable[] }
  | { type: 'commit'; endLsn: bigint }
  | { type: 'message'; lsn: bigint; prefix: string; transactional: boolean }
  | { type: 'skip' };

const LSN_TEXT = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/;

export function parseLsn(lsn: string): bigint {
  // pg_lsn's own text form only: anything else is a bug upstream, not a position.
  if (!LSN_TEXT.test(lsn)) throw new Error(`invalid LSN ${JSON.stringify(lsn)}`);
  const [hi, lo] = lsn.split('/');
  return (BigInt('0x' + hi) << 32n) | BigInt('0x' + lo);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function isSourceTable(schema: string | undefined, name: string): name is SourceTable {
  return (schema === undefined || schema === 'public') && (SOURCE_TABLES as readonly string[]).includes(name);
}

/** What applying one batch did; summed into a capture segment's progress. */
export type BatchResult = {
  applied: number;
  skipped: number;
  deadLetters: number;
  perTable: Record<SourceTable, number>;
  maxEventTime: string | null;
  days: string[];
};

/** A zero count per source table. */
export const zeroPerTable = (): Record<SourceTable, number> =>
  Object.fromEntries(SOURCE_TABLES.map((t) => [t, 0])) as Record<SourceTable, number>;

export function emptyBatchResult(skipped = 0): BatchResult {
  return {
    applied: 0,
    skipped,
    deadLetters: 0,
    perTable: zeroPerTable(),
    maxEventTime: null,
    days: [],
  };
}
