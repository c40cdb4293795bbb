/**
 * The narrow interfaces the capture path is built on. Data flows one way: the change source hands bounded batches
 * to the batch sink, which commits them with the checkpoint; only then is the source acknowledged. The DWS
 * refresher follows the sink on its own cursor. src/cdc defines these ports and never imports their
 * implementations; the activity layer wires them.
 */
import type { BatchResult, Change, SourceColumn, SourceTable } from './changes';

/** A cut of the change stream: changes in source order and the slot position the batch completes. */
export type ChangeBatch = {
  changes: Change[];
  /** Commit end of the last whole transaction in the batch (or an idle/marker position with no changes). */
  endLsn: bigint;
  /** Some change carries its table's column list (see RowChange.columns): the sink checks its ODS mirror. */
  newColumns?: boolean;
};

export interface BatchSink<Prepared = unknown> {
  /** CPU-only work done when the batch is cut, while the previous batch is still being written. */
  prepare(batch: ChangeBatch): Prepared;
  /**
   * Applies the batch and advances the checkpoint in one transaction. `confirmLsn` is the slot position the
   * commit covers, or null when the batch ends inside a transaction. Changes at or before the checkpoint are
   * skipped, so a replayed batch applies nothing twice.
   */
  apply(prepared: Prepared, confirmLsn: bigint | null): Promise<BatchResult>;
  /**
   * Optional: applies the batch while `previous`, the batch before it, is still being applied (`previousDone`
   * settles when that is over), committing only after it and only if it committed. Null, having written nothing,
   * when the sink cannot (then the batch is applied after `previous`). Without it the sink takes one batch at a time.
   */
  applyBehind?(
    prepared: Prepared,
    previous: Prepared,
    previousDone: Promise<unknown>,
    confirmLsn: bigint | null,
  ): Promise<BatchResult | null>;
}

/** What a DWS refresher reports to the capture segment it runs beside. */
export type RefreshStats = { dwsRefreshes: number; revisions: number; refreshMs: number };

/** Size and last key of a staged snapshot chunk: where the next chunk's COPY starts. */
export type StagedChunk = { rows: number; lastKey: string | null };

export type LoadedChunk = { rows: number; deadLetters: number; days: string[]; maxEventTime: string | null };

/** Where the snapshot reader puts the source tables' rows, chunk by chunk. */
/**
 * A chunk of a fanned-out snapshot: its load also marks it done, in the same transaction, and loads nothing when
 * another attempt already did (then the recorded result is returned).
 */
export type PlannedChunkRef = { snapshotId: string; chunkNo: number };

export interface SnapshotSink {
  /** Empties the layers and starts a new checkpoint epoch (returned); older captures and snapshots are fenced off. */
  begin(): Promise<string>;
  /**
   * Readies the table's ODS mirror for the source's columns (`source`, from its catalog); returns the columns the
   * chunks of this table must carry, in order.
   */
  prepareTable(table: SourceTable, source: SourceColumn[]): Promise<string[]>;
  /**
   * Stages one chunk from the source's COPY text (`copyOut` opens that stream) in a session of its own, tells
   * `staged` its size as soon as it is staged, then loads ODS, dead letters, DWD and DWS marks from it.
   */
  loadChunk(
    table: SourceTable,
    snapshotLsn: string,
    copyOut: () => NodeJS.ReadableStream,
    staged: (chunk: StagedChunk) => void,
    planned?: PlannedChunkRef,
  ): Promise<LoadedChunk | null>;
  /** Commits the end of the snapshot: streaming starts at `consistentLsn`. */
  finish(consistentLsn: string, rows: number, maxEventTime: string | null): Promise<void>;
}
