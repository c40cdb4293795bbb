import { LogicalReplicationService } from 'pg-logical-replication';
import pg from 'pg';
import { refreshDirtyPartitions } from '../sink/aggregates';
import {
  applyChangeBatch,
  applyPreparedBatch,
  prepareBatch,
  withTransaction,
  type BatchResult,
  type PreparedBatch,
} from '../sink/writer';
import * as metrics from '../observability/metrics';
import { formatLsn, parseLsn, SOURCE_TABLES, type Change, type SourceTable } from './changes';
import { decoderFor } from './decoders';

/** What a capture segment streams, and its batch and refresh bounds. */
export type CaptureOptions = {
  pipelineId: string;
  slotName: string;
  publication: string;
  plugin: 'pgoutput' | 'wal2json';
  sourceUrl: string;
  maxSeconds: number;
  maxBatchRows: number;
  maxBatchDelayMs: number;
  dwsRefreshMs: number;
};

export type CaptureProgress = {
  confirmedLsn: string;
  applied: number;
  skipped: number;
  batches: number;
  deadLetters: number;
  perTable: Record<SourceTable, number>;
  dwsRefreshes: number;
  revisions: number;
  /** Time spent writing batches and refreshing DWS: tells sink-bound from decode-bound segments. */
  writeMs: number;
  refreshMs: number;
  maxEventTime: string | null;
  days: string[];
  seconds: number;
};

const IDLE_CONFIRM_MS = 5000;

export class SlotMissingError extends Error {
  constructor(slot: string, detail: string) {
    super(
      `replication slot "${slot}" does not exist (${detail}); recover with: stategrid pipeline stop && stategrid pipeline start --resync`,
    );
    this.name = 'SlotMissingError';
  }
}

export class PublicationAlteredError extends Error {
  constructor(publication: string, missing: string[]) {
    super(
      `publication "${publication}" no longer publishes ${missing.join(', ')} (ALTER/DROP PUBLICATION?); changes ` +
        'made since then were not sent by the server. Recover with: stategrid pipeline stop && stategrid pipeline start --resync',
    );
    this.name = 'PublicationAlteredError';
  }
}

/** Source tables the publication does not (or no longer) cover; pgoutput silently skips their changes. */
export async function unpublishedTables(source: pg.ClientBase, publication: string): Promise<SourceTable[]> {
  const { rows } = await source.query<{ tablename: string }>(
    `SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'`,
    [publication],
  );
  const published = new Set(rows.map((r) => r.tablename));
  return SOURCE_TABLES.filter((t) => !published.has(t));
}

const PUBLICATION_CHECK_MS = 3000;

type Hooks = {
  heartbeat: (p: CaptureProgress) => void;
  cancelled: Promise<unknown>;
  log: (msg: string, extra?: object) => void;
  debug: (msg: string, extra?: object) => void;
};

/**
 * A replication stream that outlives one capture segment. Reconnecting at every segment made the walsender
 * re-decode from the slot's restart_lsn (which lags up to a running-xacts interval behind), a stall of up to a
 * second after heavy load. Between segments the stream is parked: nothing is applied or confirmed, and the
 * walsender is held back by flow control. The next segment of the same pipeline takes it over when it starts
 * exactly where the stream stands (the sink checkpoint); otherwise, or after PARK_MS, the stream is closed.
 */
type CaptureSession = {
  matches: (sink: pg.Pool, opts: CaptureOptions, epoch: string, startLsn: bigint) => boolean;
  /** Runs one segment; `cancelled` when it ended on pause/stop rather than at its time limit. */
  runSegment: (
    opts: CaptureOptions,
    hooks: Hooks,
  ) => Promise<{ progress: CaptureProgress; cancelled: boolean }>;
  park: (ms: number, onExpired: () => void) => void;
  destroy: () => Promise<void>;
};

const PARK_MS = 5000;
const MAX_QUEUED_WRITES = 2;
const parkedSessions = new Map<string, CaptureSession>();

/** Closes every parked stream of this worker (at shutdown). */
export async function closeParkedStreams(): Promise<void> {
  await Promise.all([...parkedSessions.keys()].map((slot) => closeParkedStream(slot)));
}

/** Closes this worker's parked stream on a slot (before the slot is dropped or re-created). */
export async function closeParkedStream(slotName: string): Promise<void> {
  const parked = parkedSessions.get(slotName);
  parkedSessions.delete(slotName);
  await parked?.destroy();
}

/**
 * One capture segment: streams the slot from the sink checkpoint, applies bounded batches, acknowledges to the
 * slot only what the sink has committed, and keeps DWS provisional rows fresh. Returns after `maxSeconds`.
 */
export async function runCaptureSegment(
  sink: pg.Pool,
  opts: CaptureOptions,
  startLsn: bigint,
  epoch: string,
  hooks: Hooks,
): Promise<CaptureProgress> {
  let session = parkedSessions.get(opts.slotName);
  parkedSessions.delete(opts.slotName);
  if (session && !session.matches(sink, opts, epoch, startLsn)) {
    hooks.debug('parked replication stream does not continue at the checkpoint; reconnecting');
    await session.destroy();
    session = undefined;
  }
  session ??= await openCaptureSession(sink, opts, startLsn, epoch);
  let segment: { progress: CaptureProgress; cancelled: boolean };
  try {
    segment = await session.runSegment(opts, hooks);
  } catch (err) {
    await session.destroy();
    throw err;
  }
  if (segment.cancelled) {
    // Pause or stop: leave the slot now; nothing takes the stream over soon.
    await session.destroy();
    return segment.progress;
  }
  const parked = session;
  parkedSessions.set(opts.slotName, parked);
  parked.park(PARK_MS, () => {
    if (parkedSessions.get(opts.slotName) === parked) parkedSessions.delete(opts.slotName);
  });
  return segment.progress;
}

async function openCaptureSession(
  sink: pg.Pool,
  first: CaptureOptions,
  startLsn: bigint,
  epoch: string,
): Promise<CaptureSession> {
  let opts = first;
  const decoder = decoderFor(opts.plugin, opts.publication);
  // Per segment: what the running segment reports, and its hooks.
  let progress = newProgress(startLsn);
  let days = new Set<string>();
  let hooks: Hooks | null = null;

  // Counts plugin-parsed messages so keepalives are trusted only when every received message was processed.
  let received = 0;
  let processed = 0;
  const parse = decoder.plugin.parse.bind(decoder.plugin);
  decoder.plugin.parse = (buf: Buffer) => {
    received += 1;
    return parse(buf);
  };

  // pgoutput only sends tables in the publication: a table dropped from it must stop us, not go silent.
  const watcher = opts.plugin === 'pgoutput' ? new pg.Client({ connectionString: opts.sourceUrl }) : null;
  let lastPublicationCheck = 0;
  const checkPublication = async () => {
    if (!watcher || Date.now() - lastPublicationCheck < PUBLICATION_CHECK_MS) return;
    lastPublicationCheck = Date.now();
    const missing = await unpublishedTables(watcher, opts.publication);
    if (missing.length) throw new PublicationAlteredError(opts.publication, missing);
  };
  if (watcher) {
    watcher.on('error', () => undefined); // surfaced by the failing query
    await watcher.connect();
    try {
      await checkPublication();
    } catch (err) {
      await watcher.end().catch(() => undefined);
      throw err;
    }
  }

  const service = new LogicalReplicationService(
    { connectionString: opts.sourceUrl, application_name: `stategrid-${opts.pipelineId}` },
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );

  let confirmed = startLsn; // everything before this is committed in the sink
  let lastCommitEnd = startLsn;
  let inTx = false;
  let txLsn = 0n;
  let txSeq = 0;
  let commitTime: string | null = null;
  let pending: Change[] = [];
  let firstPendingAt = 0;
  let dirtySinceRefresh = false;
  let lastRefresh = 0;
  let dwsConfirmed = 0n;
  let flushing: Promise<void> = Promise.resolve();
  let failure: Error | undefined;
  let destroyed = false;

  // Parked between segments: the data handler waits here, so nothing is applied without a running segment.
  let attached = false;
  let attach = () => undefined as void;
  let whenAttached = new Promise<void>((r) => (attach = r));
  let parkTimer: NodeJS.Timeout | undefined;

  const ack = (lsn: bigint, ping = false) => {
    // The library reports lsn+1 as flushed; the slot must confirm exactly what we committed.
    if (lsn > 0n) void service.acknowledge(formatLsn(lsn - 1n), ping);
  };

  const mergeResult = (r: BatchResult) => {
    progress.applied += r.applied;
    progress.skipped += r.skipped;
    progress.deadLetters += r.deadLetters;
    progress.perTable.power_user += r.perTable.power_user;
    progress.perTable.power_consumption += r.perTable.power_consumption;
    if (r.maxEventTime && (!progress.maxEventTime || r.maxEventTime > progress.maxEventTime)) {
      progress.maxEventTime = r.maxEventTime;
    }
    for (const d of r.days) days.add(d);
  };

  /** Writes one batch; `confirm` is the slot position the batch completes (taken when the batch was cut). */
  const doFlush = async (batch: Change[], confirm: bigint, prepared: PreparedBatch | null) => {
    if (!batch.length && confirm <= confirmed) return;
    const writeStarted = Date.now();
    const confirmLsn = confirm > confirmed ? confirm : null;
    // The prepared statement is the whole transaction when the batch continues the checkpoint; otherwise (a
    // replay after a crash, a stale capture) the general path filters and checks.
    const result =
      (prepared && (await applyPreparedBatch(sink, opts.pipelineId, epoch, prepared, confirmLsn))) ??
      (await withTransaction(sink, (client) =>
        applyChangeBatch(client, opts.pipelineId, epoch, batch, confirmLsn),
      ));
    const writeMs = Date.now() - writeStarted;
    progress.writeMs += writeMs;
    if (batch.length) {
      progress.batches += 1;
      dirtySinceRefresh = true;
      mergeResult(result);
      metrics.batchSeconds.observe({ pipeline: opts.pipelineId }, writeMs / 1000);
      for (const table of SOURCE_TABLES) {
        metrics.rowsApplied.inc({ pipeline: opts.pipelineId, table }, result.perTable[table]);
      }
      metrics.deadLetters.inc({ pipeline: opts.pipelineId }, result.deadLetters);
      hooks?.debug('batch applied', {
        batch: progress.batches,
        rows: batch.length,
        lsn: formatLsn(batch[batch.length - 1].txLsn),
        seq: batch[batch.length - 1].seq,
        writeMs,
      });
    }
    if (confirm > confirmed) {
      confirmed = confirm;
      progress.confirmedLsn = formatLsn(confirmed);
      ack(confirmed);
    }
  };

  /**
   * Cuts the pending batch now, builds its statement parameters and queues its write behind earlier ones:
   * writes never run concurrently, but later batches are decoded and prepared while this one is written.
   */
  const flush = (idleConfirm?: bigint) => {
    const batch = pending;
    pending = [];
    const confirm = idleConfirm !== undefined && idleConfirm > lastCommitEnd ? idleConfirm : lastCommitEnd;
    const prepared = prepareBatch(batch);
    queuedWrites += 1;
    flushing = flushing
      .then(() => doFlush(batch, confirm, prepared))
      .finally(() => {
        queuedWrites -= 1;
        writeSettled?.();
      });
    return flushing;
  };
  // Writes queued or running, and a way to wait for the next one to settle.
  let queuedWrites = 0;
  let writeSettled: (() => void) | null = null;
  const nextWriteSettled = () => new Promise<void>((r) => (writeSettled = r));

  let lastRefreshMs = 0;
  const maybeRefreshDws = async () => {
    // A refresh recomputes whole (day, region) partitions: when they are big, space refreshes out so they
    // take at most about a third of the time instead of starving the apply loop.
    if (Date.now() - lastRefresh < Math.max(opts.dwsRefreshMs, 2 * lastRefreshMs)) return;
    if (!dirtySinceRefresh && dwsConfirmed >= confirmed) return;
    lastRefresh = Date.now();
    dirtySinceRefresh = false;
    const beforeConfirmed = confirmed;
    const r = await refreshDirtyPartitions(sink, opts.pipelineId);
    lastRefreshMs = Date.now() - lastRefresh;
    progress.refreshMs += lastRefreshMs;
    dwsConfirmed = beforeConfirmed;
    progress.dwsRefreshes += 1;
    progress.revisions += r.revisions;
    metrics.dwsRevisions.inc({ pipeline: opts.pipelineId }, r.revisions);
    metrics.lateEvents.inc({ pipeline: opts.pipelineId }, r.lateEvents ?? 0);
  };
  // Refreshes run beside the loop: a long one must not hold back the time-based flush of small batches
  // (that wait is what commit-to-DWD latency would pay). One at a time; a failure fails the segment.
  let refreshing = null as Promise<void> | null;
  const startRefresh = () => {
    if (refreshing) return;
    refreshing = maybeRefreshDws()
      .catch(onError)
      .finally(() => (refreshing = null));
  };

  service.on('data', async (_lsn: string, message: unknown) => {
    if (!attached) await whenAttached;
    processed += 1;
    if (failure) return;
    const ev = decoder.decode(message);
    switch (ev.type) {
      case 'begin':
        inTx = true;
        txLsn = ev.txLsn;
        txSeq = 0;
        commitTime = ev.commitTime;
        return;
      case 'commit':
        inTx = false;
        lastCommitEnd = ev.endLsn;
        break;
      case 'change':
        txSeq += 1;
        pending.push({
          kind: 'row',
          table: ev.table,
          op: ev.op,
          row: ev.row,
          oldKey: ev.oldKey,
          txLsn,
          seq: txSeq,
          commitTime,
        });
        break;
      case 'truncate':
        txSeq += 1;
        pending.push({ kind: 'truncate', tables: ev.tables, txLsn, seq: txSeq, commitTime });
        break;
      case 'message':
        // Our own heartbeat/wait markers: outside a transaction everything before them has been decoded.
        if (!ev.transactional && !inTx && ev.prefix.startsWith('stategrid')) {
          await flush(ev.lsn);
          return;
        }
        return;
      default:
        return;
    }
    if (pending.length && firstPendingAt === 0) firstPendingAt = Date.now();
    if (pending.length >= opts.maxBatchRows) {
      firstPendingAt = 0;
      // At most one batch in the sink, one prepared behind it and one being decoded: memory stays bounded, the
      // next write starts the moment the previous one commits, and the walsender keeps streaming meanwhile.
      flush().catch(onError);
      while (queuedWrites >= MAX_QUEUED_WRITES) await nextWriteSettled();
    }
  });

  let lastIdleConfirm = 0;
  service.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
    const idle = attached && !inTx && pending.length === 0 && received === processed;
    const pos = parseLsn(lsn);
    if (idle && pos > confirmed && Date.now() - lastIdleConfirm >= IDLE_CONFIRM_MS) {
      // Nothing of ours is in flight: the slot may advance to the server's position (WAL of other databases).
      // Throttled, since the checkpoint write itself makes WAL that the next keepalive reports.
      lastIdleConfirm = Date.now();
      flush(pos).catch(onError);
    } else if (shouldRespond) {
      ack(confirmed);
    }
  });

  const onError = (err: Error) => {
    failure ??= err;
  };
  service.on('error', onError);

  const subscribed = service
    .subscribe(decoder.plugin, opts.slotName, formatLsn(startLsn))
    .catch((err: Error) => {
      if (/replication slot .* does not exist/.test(err.message)) {
        throw new SlotMissingError(opts.slotName, err.message);
      }
      throw err;
    });
  let ended: Error | 'done' | undefined;
  subscribed.then(
    () => (ended ??= 'done'),
    (err: Error) => (ended ??= err),
  );

  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    clearTimeout(parkTimer);
    attached = false;
    await refreshing?.catch(() => undefined);
    await service.destroy().catch(() => undefined);
    await watcher?.end().catch(() => undefined);
  };

  const runSegment = async (segmentOpts: CaptureOptions, segmentHooks: Hooks) => {
    opts = segmentOpts;
    hooks = segmentHooks;
    progress = newProgress(confirmed);
    days = new Set<string>();
    clearTimeout(parkTimer);
    const started = Date.now();
    let cancelled = false;
    segmentHooks.cancelled.then(
      () => (cancelled = true),
      () => (cancelled = true),
    );
    attached = true;
    attach();

    const deadline = started + opts.maxSeconds * 1000;
    let lastBeat = 0;
    let lastPing = 0;
    while (Date.now() < deadline && !cancelled) {
      await new Promise((r) => setTimeout(r, 50));
      if (failure) throw failure;
      if (ended instanceof Error) throw ended;
      if (ended === 'done') throw new Error('replication stream ended unexpectedly');
      if (pending.length && Date.now() - firstPendingAt >= opts.maxBatchDelayMs) {
        firstPendingAt = 0;
        await flush();
      }
      await flushing;
      startRefresh();
      await checkPublication();
      const now = Date.now();
      if (now - lastPing > 1000) {
        lastPing = now;
        ack(confirmed, true); // asks the server for a keepalive carrying its current position
      }
      if (now - lastBeat > 1000) {
        lastBeat = now;
        progress.seconds = (now - started) / 1000;
        progress.days = [...days];
        segmentHooks.heartbeat(progress);
      }
    }
    // Park first, so the handler takes no new message; then apply what is decoded and committed up to here.
    attached = false;
    whenAttached = new Promise<void>((r) => (attach = r));
    await flush();
    await flushing;
    if (failure) throw failure;
    if (cancelled) {
      // Pausing or stopping: no segment follows soon, so leave DWS current now. Otherwise a running refresh
      // goes on beside the parked stream; waiting for it (or a new one) here held the stream up to a second.
      await refreshing;
      lastRefresh = 0;
      await maybeRefreshDws();
      if (failure) throw failure;
    }
    lastPublicationCheck = 0;
    await checkPublication();
    progress.seconds = (Date.now() - started) / 1000;
    progress.days = [...days];
    segmentHooks.log('capture segment done', {
      confirmedLsn: progress.confirmedLsn,
      applied: progress.applied,
      seconds: progress.seconds,
      writeMs: progress.writeMs,
      refreshMs: progress.refreshMs,
    });
    return { progress, cancelled };
  };

  return {
    matches: (s, o, e, lsn) =>
      !destroyed &&
      !failure &&
      ended === undefined &&
      s === sink &&
      e === epoch &&
      lsn === confirmed &&
      pending.length === 0 &&
      o.pipelineId === first.pipelineId &&
      o.plugin === first.plugin &&
      o.publication === first.publication &&
      o.sourceUrl === first.sourceUrl,
    runSegment,
    park: (ms, onExpired) => {
      clearTimeout(parkTimer);
      parkTimer = setTimeout(() => {
        onExpired();
        void destroy();
      }, ms);
      parkTimer.unref();
    },
    destroy,
  };
}

function newProgress(lsn: bigint): CaptureProgress {
  return {
    confirmedLsn: formatLsn(lsn),
    applied: 0,
    skipped: 0,
    batches: 0,
    deadLetters: 0,
    perTable: { power_user: 0, power_consumption: 0 },
    dwsRefreshes: 0,
    revisions: 0,
    writeMs: 0,
    refreshMs: 0,
    maxEventTime: null,
    days: [],
    seconds: 0,
  };
}
