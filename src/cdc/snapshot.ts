import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { SOURCE_TABLES, type SourceTable } from './changes';
import type { LoadedChunk, SnapshotSink, StagedChunk } from './ports';
import {
  beginInSnapshot,
  copyChunkSql,
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

export async function runSnapshot(
  sink: SnapshotSink,
  opts: SnapshotOptions,
  onProgress: (rows: number) => void,
): Promise<SnapshotResult> {
  const started = Date.now();
  // A half-done earlier snapshot cannot be resumed (its exported snapshot died with its connection): start over.
  if (await slotExists(opts.sourceUrl, opts.slotName)) await dropSlot(opts.sourceUrl, opts.slotName);
  await sink.begin();
  const repl = new pg.Client({
    connectionString: opts.sourceUrl,
    replication: 'database',
  } as pg.ClientConfig);
  const reader = new pg.Client({ connectionString: opts.sourceUrl });
  for (const c of [repl, reader]) c.on('error', () => undefined); // surfaced by the failing query
  await repl.connect();
  await reader.connect();
  try {
    const slot = await createSlotWithSnapshot(repl, opts.slotName, opts.plugin);
    await beginInSnapshot(reader, slot.snapshotName);
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
