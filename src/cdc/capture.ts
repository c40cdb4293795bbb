import * as metrics from '../observability/metrics';
import { formatLsn, SOURCE_TABLES, zeroPerTable, type BatchResult, type SourceTable } from './changes';
import type { BatchSink, ChangeBatch } from './ports';
import { slotExists } from './source-admin';
import { ReplicationStream, type StreamTarget } from './replication-stream';
import type { StreamPark } from './stream-park';

/** Batch and time bounds of one capture segment. */
export type SegmentLimits = {
  maxSeconds: number;
  maxBatchRows: number;
  maxBatchDelayMs: number;
  /** How often the source logs its running transactions while batches are applied; 0: never. */
  restartMarkMs: number;
};

export type CaptureProgress = {
  confirmedLsn: string;
  applied: number;
  skipped: number;
  batches: number;
  deadLetters: number;
  perTable: Record<SourceTable, number>;
  /** Time spent writing batches: tells sink-bound from decode-bound segments. */
  writeMs: number;
  maxEventTime: string | null;
  days: string[];
  seconds: number;
};

export type SegmentHooks = {
  heartbeat: (p: CaptureProgress) => void;
  /** Settles when the segment should end early (pause, stop, or a failure beside it). */
  cancelled: Promise<unknown>;
  log: (msg: string, extra?: object) => void;
  debug: (msg: string, extra?: object) => void;
  /**
   * The sink holds everything received, and batches moved its position since the last call: no write queued,
   * nothing decoded since. A batch without rows counts too: it confirms a position (an idle slot's, or the marker of
   * `stategrid wait`) that DWS's cursor then has to reach.
   */
  caughtUp?: () => void;
};

/**
 * At most two batches in the sink (the second written behind the first where the sink can, or prepared and
 * waiting) while the next is decoded: bounded memory.
 */
const MAX_QUEUED_WRITES = 2;
const READ_WAIT_MS = 50;
/**
 * One capture segment: takes over this worker's parked stream of the slot (or opens one at the sink checkpoint),
 * streams bounded batches into the sink, and parks the stream for the next segment when it ends at its time
 * limit; on pause/stop (`cancelled`) or failure the stream is closed and the slot left.
 */
export async function captureSegment(
  deps: { park: StreamPark; sink: BatchSink },
  target: StreamTarget,
  start: { lsn: bigint; epoch: string },
  limits: SegmentLimits,
  hooks: SegmentHooks,
): Promise<CaptureProgress> {
  const key = `${target.sourceUrl}|${target.publication}|${target.plugin}|${start.epoch}`;
  let stream = await deps.park.take(target.slotName, key, start.lsn);
  // A fresh stream (first segment, a takeover, a retry): its steps are logged, they make up a takeover's time.
  const opening = stream ? undefined : Date.now();
  if (!stream) {
    await untilSlotFree(target, hooks);
    const slotFreeMs = Date.now() - opening!;
    stream = await ReplicationStream.open(target, start.lsn);
    hooks.log('replication stream opened', {
      at: formatLsn(start.lsn),
      slotFreeMs,
      ms: Date.now() - opening!,
    });
  }
  let segment: { progress: CaptureProgress; cancelled: boolean };
  try {
    segment = await new CaptureSegment(stream, deps.sink, target.pipelineId, limits, hooks, opening).run();
  } catch (err) {
    await stream.close();
    throw err;
  }
  if (segment.cancelled) await stream.close();
  else deps.park.park(target.slotName, key, stream);
  return segment.progress;
}

const SLOT_FREE_WAIT_MS = 10000;

/**
 * A stream that just ended (a segment that failed, a worker whose segment moved elsewhere) leaves the slot a moment
 * later; waiting for that here beats failing with "replication slot is active" (55006) and retrying from backoff.
 */
async function untilSlotFree(target: StreamTarget, hooks: SegmentHooks): Promise<void> {
  const deadline = Date.now() + SLOT_FREE_WAIT_MS;
  let told = false;
  while (Date.now() < deadline) {
    const slot = await slotExists(target.sourceUrl, target.slotName);
    if (!slot?.active) return;
    if (!told) hooks.log('slot still held by an ending stream; waiting for it', { slot: target.slotName });
    told = true;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const noop = () => undefined;

/** A batch queued for its write, with what the sink prepared of it. */
type Queued = { batch: ChangeBatch; prepared: unknown };

/** A batch's write started beside the one before it, and the slot position its commit confirms. */
type Behind = { applied: Promise<BatchResult | null>; confirmLsn: bigint | null };

/** The core loop of a segment: read a batch from the source, apply it in the sink, then acknowledge it. */
class CaptureSegment {
  private readonly progress: CaptureProgress;
  private readonly days = new Set<string>();
  private readonly started = Date.now();
  private cancelled = false;
  private writing: Promise<void> = Promise.resolve();
  /** The batch queued last, until its write is done: the next batch may be written behind it. */
  private lastQueued: Queued | null = null;
  private queuedWrites = 0;
  private writeSettled: (() => void) | null = null;
  private writeFailure: unknown;
  private marking: Promise<unknown> | undefined;
  private lastMark = 0;
  private batchesAtMark = 0;
  /** Batches moved the sink's position since it last caught up with the stream (see SegmentHooks.caughtUp). */
  private movedSinceCaughtUp = false;

  constructor(
    private readonly stream: ReplicationStream,
    private readonly sink: BatchSink,
    private readonly pipelineId: string,
    private readonly limits: SegmentLimits,
    private readonly hooks: SegmentHooks,
    /** When the segment began opening a fresh stream: its first applied batch is logged. */
    private readonly openedAt?: number,
  ) {
    this.progress = newProgress(formatLsn(stream.confirmedLsn));
    hooks.cancelled.then(
      () => (this.cancelled = true),
      () => (this.cancelled = true),
    );
  }

  async run(): Promise<{ progress: CaptureProgress; cancelled: boolean }> {
    const deadline = this.started + this.limits.maxSeconds * 1000;
    let lastBeat = 0;
    let lastPing = 0;
    this.stream.attach(this.limits.maxBatchRows);
    while (Date.now() < deadline && !this.cancelled) {
      if (this.writeFailure) {
        await this.writing;
        throw this.writeFailure;
      }
      while (this.queuedWrites >= MAX_QUEUED_WRITES) await new Promise<void>((r) => (this.writeSettled = r));
      const batch = await this.stream.read(this.limits.maxBatchDelayMs, READ_WAIT_MS);
      if (batch) this.enqueue(batch);
      await this.stream.checkPublication();
      const now = Date.now();
      if (now - lastPing > 1000) {
        lastPing = now;
        this.stream.ping();
      }
      if (now - lastBeat > 1000) {
        lastBeat = now;
        this.hooks.heartbeat(this.snapshotProgress());
      }
      this.markRestartPoint(now);
    }
    // Detach first, so the handler takes no new message; then apply what is decoded and committed up to here.
    this.stream.detach();
    this.enqueue(await this.stream.cut());
    await this.writing;
    await this.marking;
    if (this.writeFailure) throw this.writeFailure;
    this.stream.throwIfBroken();
    await this.stream.checkPublication(true);
    const progress = this.snapshotProgress();
    this.hooks.log('capture segment done', {
      confirmedLsn: progress.confirmedLsn,
      applied: progress.applied,
      seconds: progress.seconds,
      writeMs: progress.writeMs,
    });
    return { progress, cancelled: this.cancelled };
  }

  /**
   * Every `restartMarkMs` while batches are applied, one mark at a time beside the loop; a failed mark is logged.
   * The source then logs its running transactions (RunningTransactionsMark): the slot's restart_lsn trails the
   * confirmed position by a second or two of WAL, not the background writer's 15 s, so a stream opened on another
   * worker after a takeover has that much less to re-decode.
   */
  private markRestartPoint(now: number) {
    const every = this.limits.restartMarkMs;
    if (!every || this.marking || now - this.lastMark < every || this.progress.batches === this.batchesAtMark)
      return;
    this.lastMark = now;
    this.batchesAtMark = this.progress.batches;
    this.marking = this.stream
      .markRestartPoint()
      .catch((err: Error) => this.hooks.debug('restart point not marked', { err: err.message }))
      .finally(() => (this.marking = undefined));
  }

  /**
   * Prepares the batch now and queues its write behind earlier ones. While the batch before it is still being
   * written, the sink may start this one beside it (applyBehind); its result is taken, and the stream acknowledged,
   * in queue order all the same.
   */
  private enqueue(batch: ChangeBatch) {
    const prepared = this.sink.prepare(batch);
    const queued: Queued = { batch, prepared };
    const behind = this.startBehind(queued, this.lastQueued, this.writing);
    this.lastQueued = queued;
    this.queuedWrites += 1;
    this.writing = this.writing
      .then(() =>
        // After a failed write, a batch started behind it is waited for: it rolls back, and holds keys until then.
        this.writeFailure ? behind?.applied.then(noop, noop) : this.write(batch, prepared, behind),
      )
      .catch((err) => void (this.writeFailure ??= err))
      .finally(() => {
        this.queuedWrites -= 1;
        if (this.lastQueued === queued) this.lastQueued = null;
        this.reportCaughtUp();
        const settled = this.writeSettled;
        this.writeSettled = null;
        settled?.();
      });
  }

  /** The batch's write started beside the one before it, when the sink can (see BatchSink.applyBehind). */
  private startBehind(queued: Queued, previous: Queued | null, previousDone: Promise<void>): Behind | null {
    if (!previous || !this.sink.applyBehind || this.writeFailure || !queued.batch.changes.length) return null;
    const confirmLsn = this.confirmLsnOf(queued.batch, previous.batch.endLsn);
    const applied = this.sink.applyBehind(queued.prepared, previous.prepared, previousDone, confirmLsn);
    // Awaited in its turn; a failure before that turn is the earlier write's, reported by that write.
    applied.catch(noop);
    return { applied, confirmLsn };
  }

  /** The slot position a batch's commit confirms, past what is confirmed or written before it; null: none. */
  private confirmLsnOf(batch: ChangeBatch, writtenBefore = 0n): bigint | null {
    const confirmed = this.stream.confirmedLsn > writtenBefore ? this.stream.confirmedLsn : writtenBefore;
    return batch.endLsn > confirmed ? batch.endLsn : null;
  }

  private async write(batch: ChangeBatch, prepared: unknown, behind: Behind | null) {
    if (!batch.changes.length && batch.endLsn <= this.stream.confirmedLsn) return;
    const started = Date.now();
    const early = behind && (await behind.applied);
    const confirmLsn = early ? behind.confirmLsn : this.confirmLsnOf(batch);
    const result = early ?? (await this.sink.apply(prepared, confirmLsn));
    const writeMs = Date.now() - started;
    this.progress.writeMs += writeMs;
    if (batch.changes.length) this.count(batch, result, writeMs);
    if (this.openedAt !== undefined && this.progress.batches === 1 && batch.changes.length)
      this.hooks.log('first batch of a fresh stream applied', {
        rows: batch.changes.length,
        writeMs,
        ms: Date.now() - this.openedAt,
      });
    if (confirmLsn !== null) {
      this.stream.acknowledge(confirmLsn);
      this.progress.confirmedLsn = formatLsn(confirmLsn);
    }
    this.movedSinceCaughtUp = true;
  }

  /** After the last queued write: tells the hook when batches moved the position and nothing is waiting. */
  private reportCaughtUp() {
    if (!this.movedSinceCaughtUp || this.queuedWrites > 0 || this.writeFailure || !this.stream.drained)
      return;
    this.movedSinceCaughtUp = false;
    this.hooks.caughtUp?.();
  }

  private count(batch: ChangeBatch, r: BatchResult, writeMs: number) {
    const p = this.progress;
    p.batches += 1;
    p.applied += r.applied;
    p.skipped += r.skipped;
    p.deadLetters += r.deadLetters;
    for (const table of SOURCE_TABLES) p.perTable[table] += r.perTable[table];
    if (r.maxEventTime && (!p.maxEventTime || r.maxEventTime > p.maxEventTime))
      p.maxEventTime = r.maxEventTime;
    for (const d of r.days) this.days.add(d);
    const labels = { pipeline: this.pipelineId };
    metrics.batchSeconds.observe(labels, writeMs / 1000);
    for (const table of SOURCE_TABLES) metrics.rowsApplied.inc({ ...labels, table }, r.perTable[table]);
    metrics.deadLetters.inc(labels, r.deadLetters);
    const last = batch.changes[batch.changes.length - 1];
    this.hooks.debug('batch applied', {
      batch: p.batches,
      rows: batch.changes.length,
      lsn: formatLsn(last.txLsn),
      seq: last.seq,
      writeMs,
    });
  }

  private snapshotProgress(): CaptureProgress {
    return { ...this.progress, days: [...this.days], seconds: (Date.now() - this.started) / 1000 };
  }
}

function newProgress(confirmedLsn: string): CaptureProgress {
  return {
    confirmedLsn,
    applied: 0,
    skipped: 0,
    batches: 0,
    deadLetters: 0,
    perTable: zeroPerTable(),
    writeMs: 0,
    maxEventTime: null,
    days: [],
    seconds: 0,
  };
}
