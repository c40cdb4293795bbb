import { LogicalReplicationService } from 'pg-logical-replication';
import { withClient } from '../db/client';
import {
  formatLsn,
  parseLsn,
  type Change,
  type ColumnRef,
  type RowChange,
  type StreamEvent,
} from './changes';
import { decoderFor, type Decoder } from './decoders';
import { deliverDirectly } from './direct-delivery';
import type { ChangeBatch } from './ports';
import {
  PublicationGuard,
  restartMarkSlotName,
  RunningTransactionsMark,
  SlotMissingError,
  sourceColumns,
} from './source-admin';

/** Where a stream reads from: one pipeline's slot and publication on the source. */
export type StreamTarget = {
  pipelineId: string;
  slotName: string;
  publication: string;
  plugin: 'pgoutput' | 'wal2json';
  sourceUrl: string;
  /** logical_decoding_work_mem of the replication connection in MB (0: the server's). */
  decodingWorkMemMb: number;
};

/** How often an idle slot may be confirmed forward: the checkpoint write itself makes WAL the next keepalive reports. */
const IDLE_CONFIRM_MS = 5000;

/** The transaction being decoded: its position, commit time and the number of its last change. */
export type OpenTransaction = { lsn: bigint; seq: number; commitTime: string | null };

/** The next row change of `tx`, numbered by its place in the transaction (seq). */
export function nextRowChange(
  tx: OpenTransaction,
  ev: Extract<StreamEvent, { type: 'change' }>,
): RowChange & Change {
  tx.seq += 1;
  return {
    kind: 'row',
    table: ev.table,
    op: ev.op,
    row: ev.row,
    oldKey: ev.oldKey,
    txLsn: tx.lsn,
    seq: tx.seq,
    commitTime: tx.commitTime,
  };
}

/** A pending change that carries its table's column list as the plugin gave it, types not yet looked up. */
type UnresolvedColumns = { change: RowChange; refs: ColumnRef[] };

/**
 * The change source: a logical replication stream opened at a cursor, read in bounded batches and acknowledged
 * only up to what the sink committed. Each protocol event has its own handler over the typed state below.
 *
 * Between capture segments the stream can be detached: the data handler then waits, so nothing is decoded into a
 * batch or confirmed, and the walsender is held back by flow control until the next segment attaches.
 */
export class ReplicationStream {
  /** Acknowledged cursor: everything before it is committed in the sink. Never moves backwards. */
  private confirmed: bigint;
  private lastCommitEnd: bigint;
  private tx: OpenTransaction | null = null;
  private pending: Change[] = [];
  private pendingColumns: UnresolvedColumns[] = [];
  private firstPendingAt = 0;
  /** A position past the last commit the next batch may confirm (idle keepalive, our own marker). */
  private positionHint: bigint | null = null;
  private handled = 0;
  private lastIdleConfirm = 0;
  private maxBatchRows = 1;
  private failure: Error | undefined;
  private ended: Error | 'done' | undefined;
  private closed = false;
  private attached = false;
  private whenAttached = deferred();
  /** The reader waiting for a batch, and the handler waiting for a full batch to be taken. */
  private readerWaiting: (() => void) | null = null;
  private handlerWaiting: (() => void) | null = null;
  private readonly restartMark: RunningTransactionsMark;

  private constructor(
    readonly target: StreamTarget,
    private readonly decoder: Decoder,
    private readonly service: LogicalReplicationService,
    private readonly guard: PublicationGuard,
    startLsn: bigint,
  ) {
    this.confirmed = startLsn;
    this.lastCommitEnd = startLsn;
    this.restartMark = new RunningTransactionsMark(target.sourceUrl, restartMarkSlotName(target.slotName));
  }

  /** Opens the slot's stream at `startLsn` (the sink checkpoint). */
  static async open(target: StreamTarget, startLsn: bigint): Promise<ReplicationStream> {
    const guard = await PublicationGuard.open(target.sourceUrl, target.publication, target.plugin);
    const service = new LogicalReplicationService(
      {
        connectionString: target.sourceUrl,
        application_name: `stategrid-${target.pipelineId}`,
        ...decodingMemory(target.decodingWorkMemMb),
      },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    const stream = new ReplicationStream(
      target,
      decoderFor(target.plugin, target.publication),
      service,
      guard,
      startLsn,
    );
    stream.subscribe(startLsn);
    return stream;
  }

  private subscribe(startLsn: bigint) {
    const onData = (message: unknown) => this.onData(message);
    if (!deliverDirectly(this.service, onData, (payload) => this.decoder.plugin.parse(payload)))
      this.service.on('data', (_lsn: string, m: unknown) => onData(m));
    this.service.on('heartbeat', (lsn: string, _ts: number, reply: boolean) => this.onKeepalive(lsn, reply));
    this.service.on('error', (err: Error) => this.fail(err));
    this.service.subscribe(this.decoder.plugin, this.target.slotName, formatLsn(startLsn)).then(
      () => (this.ended ??= 'done'),
      (err: Error) =>
        (this.ended ??= /replication slot .* does not exist/.test(err.message)
          ? new SlotMissingError(this.target.slotName, err.message)
          : err),
    );
  }

  // ---- protocol events ----

  /**
   * Synchronous unless the handler has to wait (detached, or a full batch): a promise per message is a measurable
   * share of the worker's CPU per streamed row (see deliverDirectly); a returned promise pauses the socket.
   */
  private onData(message: unknown): Promise<void> | void {
    if (!this.attached) return this.whenAttached.promise.then(() => this.handleData(message));
    return this.handleData(message);
  }

  private handleData(message: unknown): Promise<void> | void {
    this.handled += 1;
    if (this.failure) return;
    const ev = this.decoder.decode(message);
    switch (ev.type) {
      case 'begin':
        return this.onBegin(ev);
      case 'commit':
        return this.onCommit(ev);
      case 'change':
        this.onChange(ev);
        break;
      case 'truncate':
        this.onTruncate(ev);
        break;
      case 'message':
        return this.onMessage(ev);
      default:
        return;
    }
    if (this.pending.length >= this.maxBatchRows && !this.closed) return this.waitForReader();
  }

  /** Back-pressure: a full batch waits for the reader; meanwhile the library pauses the walsender's socket. */
  private async waitForReader(): Promise<void> {
    while (this.pending.length >= this.maxBatchRows && !this.closed) {
      this.wakeReader();
      await new Promise<void>((r) => (this.handlerWaiting = r));
    }
  }

  private onBegin(ev: Extract<StreamEvent, { type: 'begin' }>) {
    this.tx = { lsn: ev.txLsn, seq: 0, commitTime: ev.commitTime };
  }

  private onCommit(ev: Extract<StreamEvent, { type: 'commit' }>) {
    this.tx = null;
    this.lastCommitEnd = ev.endLsn;
  }

  private onChange(ev: Extract<StreamEvent, { type: 'change' }>) {
    const change = nextRowChange(this.inTransaction(), ev);
    // A column list is not a change of its own: it takes no seq, so replays number changes alike.
    if (ev.columns) this.pendingColumns.push({ change, refs: ev.columns });
    this.push(change);
  }

  private onTruncate(ev: Extract<StreamEvent, { type: 'truncate' }>) {
    const tx = this.inTransaction();
    tx.seq += 1;
    this.push({ kind: 'truncate', tables: ev.tables, txLsn: tx.lsn, seq: tx.seq, commitTime: tx.commitTime });
  }

  /** Our own heartbeat/wait markers: outside a transaction, everything before them has been decoded. */
  private onMessage(ev: Extract<StreamEvent, { type: 'message' }>) {
    if (ev.transactional || this.tx || !ev.prefix.startsWith('stategrid')) return;
    this.hintPosition(ev.lsn);
  }

  private onKeepalive(lsnText: string, reply: boolean) {
    const pos = parseLsn(lsnText);
    if (this.drained && pos > this.confirmed && Date.now() - this.lastIdleConfirm >= IDLE_CONFIRM_MS) {
      // Nothing of ours is in flight: the slot may advance to the server's position (WAL of other databases).
      this.lastIdleConfirm = Date.now();
      this.hintPosition(pos);
    } else if (reply) {
      this.sendAck(this.confirmed);
    }
  }

  private inTransaction(): OpenTransaction {
    if (!this.tx) throw new Error('change outside a transaction in the replication stream');
    return this.tx;
  }

  private push(change: Change) {
    if (this.pending.length === 0) this.firstPendingAt = Date.now();
    this.pending.push(change);
  }

  private hintPosition(lsn: bigint) {
    if (this.positionHint === null || lsn > this.positionHint) this.positionHint = lsn;
    this.wakeReader();
  }

  private wakeReader() {
    const wake = this.readerWaiting;
    this.readerWaiting = null;
    wake?.();
  }

  private fail(err: Error) {
    this.failure ??= err;
    this.wakeReader();
  }

  // ---- the reader's side ----

  /** Lets the handler decode again, cutting batches of at most `maxBatchRows` changes. */
  attach(maxBatchRows: number): void {
    this.maxBatchRows = maxBatchRows;
    this.attached = true;
    this.whenAttached.resolve();
  }

  /** Stops decoding (the handler waits at its next message); what is decoded stays for `cut()`. */
  detach(): void {
    this.attached = false;
    this.whenAttached = deferred();
  }

  /**
   * The next batch: at once when one is full or a position is hinted, after `maxDelayMs` for a partial one;
   * null when nothing is due within `waitMs` (the caller's loop does its housekeeping then).
   */
  async read(maxDelayMs: number, waitMs: number): Promise<ChangeBatch | null> {
    this.throwIfBroken();
    if (!this.batchDue(maxDelayMs)) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.readerWaiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.readerWaiting = null;
      this.throwIfBroken();
      if (!this.batchDue(maxDelayMs)) return null;
    }
    return this.cut();
  }

  private batchDue(maxDelayMs: number): boolean {
    return (
      this.pending.length >= this.maxBatchRows ||
      this.positionHint !== null ||
      (this.pending.length > 0 && Date.now() - this.firstPendingAt >= maxDelayMs)
    );
  }

  /**
   * Takes everything decoded so far as a batch ending at the last commit (or a later hinted position). Column lists
   * in it get their types from the source first (rare: a new session or an ALTER TABLE).
   */
  async cut(): Promise<ChangeBatch> {
    const changes = this.pending;
    const columnLists = this.pendingColumns;
    this.pending = [];
    this.pendingColumns = [];
    const hint = this.positionHint;
    this.positionHint = null;
    const endLsn = hint !== null && hint > this.lastCommitEnd ? hint : this.lastCommitEnd;
    const release = this.handlerWaiting;
    this.handlerWaiting = null;
    release?.();
    if (!columnLists.length) return { changes, endLsn };
    await withClient(this.target.sourceUrl, async (source) => {
      for (const { change, refs } of columnLists)
        change.columns = await sourceColumns(source, change.table, refs);
    });
    return { changes, endLsn, newColumns: true };
  }

  /**
   * Nothing received is waiting: no transaction half decoded, no change decoded but not yet cut into a batch, no
   * message parsed but not yet handled.
   */
  get drained(): boolean {
    return (
      this.attached && !this.tx && this.pending.length === 0 && this.decoder.plugin.parsed === this.handled
    );
  }

  /** The position the sink has committed everything before; it is acknowledged to the slot. */
  get confirmedLsn(): bigint {
    return this.confirmed;
  }

  /** Records a sink commit covering everything before `lsn`; an older position is ignored. */
  acknowledge(lsn: bigint): void {
    if (lsn <= this.confirmed) return;
    this.confirmed = lsn;
    this.sendAck(lsn);
  }

  /** Asks the server for a keepalive carrying its current position (how an idle slot learns to advance). */
  ping(): void {
    this.sendAck(this.confirmed, true);
  }

  private sendAck(lsn: bigint, ping = false) {
    // The library reports lsn+1 as flushed; the slot must confirm exactly what we committed.
    if (lsn > 0n) void this.service.acknowledge(formatLsn(lsn - 1n), ping);
  }

  /** Lets the slot's restart_lsn catch up with what is confirmed soon (RunningTransactionsMark). */
  markRestartPoint(): Promise<void> {
    return this.closed ? Promise.resolve() : this.restartMark.mark();
  }

  checkPublication(force = false): Promise<void> {
    return this.guard.check(force);
  }

  throwIfBroken(): void {
    if (this.failure) throw this.failure;
    if (this.ended instanceof Error) throw this.ended;
    if (this.ended === 'done') throw new Error('replication stream ended unexpectedly');
  }

  /** True when a new segment starting at `lsn` can take this stream over as it stands. */
  canResumeAt(lsn: bigint): boolean {
    return (
      !this.closed &&
      !this.failure &&
      this.ended === undefined &&
      this.pending.length === 0 &&
      this.confirmed === lsn
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.attached = false;
    this.handlerWaiting?.();
    await this.service.destroy().catch(() => undefined);
    await this.guard.close();
    await this.restartMark.close();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * The walsender's memory for decoded transactions. With the sink in the source database it also decodes the sink's
 * own writes (a snapshot chunk's ODS and DWD rows, a rebuild's totals) before it reaches the next source change;
 * at PostgreSQL's default 64 MB it spilled them to disk: the spread bench's snapshot reached DWS current 6.1 s after
 * streaming began with 64 MB, 2.9 s with 256 MB and with 1 GB. A connection string that sets `options` keeps its
 * own.
 */
function decodingMemory(mb: number): { options?: string } {
  return mb > 0 ? { options: `-c logical_decoding_work_mem=${mb}MB` } : {};
}
