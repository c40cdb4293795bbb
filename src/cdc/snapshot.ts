import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { SOURCE_TABLES, type SourceTable } from './changes';
import type { LoadedChunk, PlannedChunkRef, SnapshotSink, StagedChunk } from './ports';
import {
  beginInSnapshot,
  chunkBoundaries,
  copyChunkSql,
  copyRangeSql,
  createSlotWithSnapshot,
  dropSlot,
  endSnapshotRead,
  slotExists,
  sourceColumns,
} from './source-admin';

/**
 * Initial load consistent with the slot: the slot is created with an exported snapshot, the source tables are
 * read in that snapshot, and streaming starts at the slot's consistent point, so no change is lost or doubled.
 */
export type SnapshotOptions = {
  slotName: string;
  plugin: 'pgoutput' | 'wal2json';
  sourceUrl: string;
  chunkRows: number;
};

export type SnapshotResult = {
  consistentLsn: string;
  rows: Record<string, number>;
  seconds: number;
  /** Days of the valid consumptions loaded: the windows the workflow opens. */
  days: string[];
};

/** Concurrent chunk loads: two keeps both cores of a small machine busy without starving the apply path. */
const LOADS_IN_FLIGHT = 2;

/**
 * The start of every snapshot: a new epoch in the sink, the slot created with an exported snapshot (an earlier one is
 * dropped: a half-done snapshot cannot be resumed, its exported snapshot died with its connection), and a reader
 * transaction on that snapshot. The caller closes both connections.
 */
async function openExportedSnapshot(sink: SnapshotSink, opts: SnapshotOptions) {
  if (await slotExists(opts.sourceUrl, opts.slotName)) await dropSlot(opts.sourceUrl, opts.slotName);
  const epoch = await sink.begin();
  const repl = new pg.Client({
    connectionString: opts.sourceUrl,
    replication: 'database',
  } as pg.ClientConfig);
  const reader = new pg.Client({ connectionString: opts.sourceUrl });
  for (const c of [repl, reader]) c.on('error', () => undefined); // surfaced by the failing query
  try {
    await repl.connect();
    await reader.connect();
    const slot = await createSlotWithSnapshot(repl, opts.slotName, opts.plugin);
    await beginInSnapshot(reader, slot.snapshotName);
    return { epoch, repl, reader, slot };
  } catch (err) {
    await reader.end().catch(() => undefined);
    await repl.end().catch(() => undefined);
    throw err;
  }
}

export async function runSnapshot(
  sink: SnapshotSink,
  opts: SnapshotOptions,
  onProgress: (rows: number) => void,
): Promise<SnapshotResult> {
  const started = Date.now();
  const { repl, reader, slot } = await openExportedSnapshot(sink, opts);
  try {
    const totals = new SnapshotTotals(onProgress);
    for (const table of SOURCE_TABLES) {
      // The table's columns in the snapshot, beyond the spec too: the ODS mirror takes every one it can.
      const columns = await sink.prepareTable(table, await sourceColumns(reader, table, null));
      await copyTable(sink, reader, { table, columns }, slot.consistentPoint, opts.chunkRows, totals);
    }
    await endSnapshotRead(reader);
    await sink.finish(slot.consistentPoint, totals.total, totals.maxEventTime);
    return {
      consistentLsn: slot.consistentPoint,
      rows: totals.rows,
      seconds: (Date.now() - started) / 1000,
      days: [...totals.days].sort(),
    };
  } finally {
    await reader.end().catch(() => undefined);
    await repl.end().catch(() => undefined);
  }
}

/** A key range of one table in a fanned-out snapshot, and the columns its COPY carries. */
export type ChunkRange = {
  table: SourceTable;
  afterKey: string | null;
  upToKey: string | null;
  columns: string[];
};

/** What the holder of a fanned-out snapshot publishes for the chunk loaders. */
export type ExportedSnapshot = {
  epoch: string;
  snapshotName: string;
  consistentLsn: string;
  chunks: ChunkRange[];
};

/**
 * The holder of a fanned-out snapshot: starts a new epoch, creates the slot with an exported snapshot, plans key
 * ranges of about `chunkRows` in that snapshot, publishes the plan, and keeps the exporting connection open (the
 * exported snapshot lives as long as it does) until `untilLoaded` resolves: every chunk loaded, by any worker.
 */
export async function holdExportedSnapshot(
  sink: SnapshotSink,
  opts: SnapshotOptions,
  hooks: { publish: (s: ExportedSnapshot) => Promise<void>; untilLoaded: () => Promise<void> },
): Promise<ExportedSnapshot> {
  const { epoch, repl, reader, slot } = await openExportedSnapshot(sink, opts);
  try {
    const chunks: ChunkRange[] = [];
    for (const table of SOURCE_TABLES) {
      const columns = await sink.prepareTable(table, await sourceColumns(reader, table, null));
      const bounds = await chunkBoundaries(reader, table, opts.chunkRows);
      [null, ...bounds].forEach((afterKey, i) =>
        chunks.push({ table, afterKey, upToKey: bounds[i] ?? null, columns }),
      );
    }
    await endSnapshotRead(reader);
    await reader.end();
    const exported = { epoch, snapshotName: slot.snapshotName, consistentLsn: slot.consistentPoint, chunks };
    await hooks.publish(exported);
    await hooks.untilLoaded();
    return exported;
  } finally {
    await reader.end().catch(() => undefined);
    await repl.end().catch(() => undefined);
  }
}

/** The exported snapshot of a fanned-out snapshot is gone (its holder died): the whole snapshot starts over. */
export class SnapshotLostError extends Error {
  constructor(detail: string) {
    super(`the exported snapshot is gone (${detail}); the snapshot starts over`);
    this.name = 'SnapshotLostError';
  }
}

/** Loads one planned chunk on whichever worker runs it: reads its key range in the exported snapshot. */
export async function loadPlannedChunk(
  sink: SnapshotSink,
  sourceUrl: string,
  exported: Pick<ExportedSnapshot, 'snapshotName' | 'consistentLsn'>,
  chunk: ChunkRange & PlannedChunkRef,
): Promise<LoadedChunk | null> {
  const reader = new pg.Client({ connectionString: sourceUrl });
  reader.on('error', () => undefined);
  await reader.connect();
  try {
    try {
      await beginInSnapshot(reader, exported.snapshotName);
    } catch (err) {
      throw new SnapshotLostError(err instanceof Error ? err.message : String(err));
    }
    const sql = copyRangeSql(chunk.table, chunk.afterKey, chunk.upToKey, chunk.columns);
    const loaded = await sink.loadChunk(
      chunk.table,
      exported.consistentLsn,
      () => reader.query(copyTo(sql)),
      () => undefined,
      { snapshotId: chunk.snapshotId, chunkNo: chunk.chunkNo },
    );
    await endSnapshotRead(reader);
    return loaded;
  } finally {
    await reader.end().catch(() => undefined);
  }
}

class SnapshotTotals {
  rows: Record<string, number> = {};
  total = 0;
  maxEventTime: string | null = null;
  days = new Set<string>();
  constructor(private readonly onProgress: (rows: number) => void) {}

  add(table: SourceTable, chunk: LoadedChunk) {
    for (const d of chunk.days) this.days.add(d);
    if (chunk.maxEventTime && (!this.maxEventTime || chunk.maxEventTime > this.maxEventTime)) {
      this.maxEventTime = chunk.maxEventTime;
    }
    this.rows[table] = (this.rows[table] ?? 0) + chunk.rows;
    this.total += chunk.rows;
    this.onProgress(this.total);
  }
}

/**
 * One table in key-ordered chunks: COPY out of the snapshot into a staging table of its own sink session, then one
 * set-based load, committed chunk by chunk. The reader moves on to the next chunk as soon as one is staged, so up to
 * LOADS_IN_FLIGHT loads run at once (they are CPU-bound in the sink's backends; the COPY is not).
 */
async function copyTable(
  sink: SnapshotSink,
  reader: pg.Client,
  { table, columns }: { table: SourceTable; columns: string[] },
  snapshotLsn: string,
  chunkRows: number,
  totals: SnapshotTotals,
): Promise<void> {
  totals.rows[table] = 0;
  let lastKey: string | null = null;
  let failed: unknown;
  const inFlight = new Set<Promise<void>>();
  while (!failed) {
    let staged!: (chunk: StagedChunk) => void;
    const stagedChunk = new Promise<StagedChunk>((resolve) => (staged = resolve));
    const from = lastKey;
    const copyOut = () => reader.query(copyTo(copyChunkSql(table, from, chunkRows, columns)));
    const loading = sink.loadChunk(table, snapshotLsn, copyOut, staged).then(
      (chunk) => {
        if (chunk) totals.add(table, chunk);
      },
      (err) => {
        failed ??= err;
        staged({ rows: 0, lastKey: null }); // unblocks the reader loop if the COPY itself failed
      },
    );
    inFlight.add(loading);
    void loading.finally(() => inFlight.delete(loading));
    const chunk = await stagedChunk;
    if (chunk.rows < chunkRows) break;
    lastKey = chunk.lastKey;
    while (inFlight.size >= LOADS_IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  if (failed) throw failed;
}
