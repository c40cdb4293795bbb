import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { quoteIdent } from '../db/sql';
import { refreshDirtyPartitions } from '../sink/aggregates';
import * as ops from '../sink/ops';
import * as load from '../sink/snapshot-load';
import { withTransaction } from '../sink/writer';
import { formatLsn, parseLsn, SOURCE_TABLES } from './changes';
import { withClient } from '../db/client';

/**
 * Initial load consistent with the slot: the slot is created with an exported snapshot, the source tables are
 * read in that snapshot, and streaming starts at the slot's consistent point, so no change is lost or doubled.
 */
export type SnapshotOptions = {
  pipelineId: string;
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

type StagedRange = { rows: number; last_key: string | null };

/** Concurrent chunk loads: two keeps both cores of a small machine busy without starving the apply path. */
const LOADS_IN_FLIGHT = 2;

type LoadedChunk = {
  rows: number;
  dead_letters: number;
  days: string[] | null;
  max_event_time: string | null;
};

export async function slotExists(sourceUrl: string, slotName: string): Promise<{ active: boolean } | null> {
  return withClient(sourceUrl, async (client) => {
    const { rows } = await client.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [
      slotName,
    ]);
    return rows[0] ? { active: rows[0].active } : null;
  });
}

export async function dropSlot(sourceUrl: string, slotName: string): Promise<boolean> {
  return withClient(sourceUrl, async (client) => {
    const { rows } = await client.query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`,
      [slotName],
    );
    if (rows.length) await new Promise((r) => setTimeout(r, 500));
    const res = await client.query(
      'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1',
      [slotName],
    );
    return (res.rowCount ?? 0) > 0;
  });
}

export async function runSnapshot(
  sink: pg.Pool,
  opts: SnapshotOptions,
  onProgress: (rows: number) => void,
): Promise<SnapshotResult> {
  const started = Date.now();
  // A half-done earlier snapshot cannot be resumed (its exported snapshot died with its connection): start over.
  if (await slotExists(opts.sourceUrl, opts.slotName)) await dropSlot(opts.sourceUrl, opts.slotName);
  const epoch = await withTransaction(sink, async (client) => {
    await client.query(ops.LOCK_CHECKPOINT, [opts.pipelineId]);
    for (const sql of ops.CLEAR_FOR_SNAPSHOT) await client.query(sql);
    const { rows } = await client.query(ops.RESET_CHECKPOINT, [opts.pipelineId, 'snapshot']);
    return rows[0].epoch as string;
  });
  const guard = (rowCount: number | null) => {
    if (rowCount !== 1)
      throw new Error(`snapshot of pipeline ${opts.pipelineId} was superseded by a newer one`);
  };

  const repl = new pg.Client({
    connectionString: opts.sourceUrl,
    replication: 'database',
  } as pg.ClientConfig);
  const reader = new pg.Client({ connectionString: opts.sourceUrl });
  for (const c of [repl, reader]) c.on('error', () => undefined); // surfaced by the failing query
  await repl.connect();
  await reader.connect();
  const rows: Record<string, number> = {};
  try {
    const created = await repl.query(
      `CREATE_REPLICATION_SLOT ${quoteIdent(opts.slotName)} LOGICAL ${opts.plugin} (SNAPSHOT 'export')`,
    );
    const consistent = parseLsn(created.rows[0].consistent_point);
    const snapshotName: string = created.rows[0].snapshot_name;
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await reader.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replace(/'/g, "''")}'`);
    let total = 0;
    let maxEventTime: string | null = null;
    const days = new Set<string>();
    const lsn = formatLsn(consistent);
    // Users first, so consumptions join to them as they land. Each chunk: COPY out of the snapshot into a temp
    // table of its own sink session, then one set-based load, committed chunk by chunk. The reader moves on to
    // the next chunk as soon as one is staged, so up to LOADS_IN_FLIGHT loads run at once (they are CPU-bound in
    // the sink's backends; the COPY is not).
    let failed: unknown;
    for (const table of SOURCE_TABLES) {
      rows[table] = 0;
      let lastKey: string | null = null;
      const inFlight = new Set<Promise<void>>();
      while (!failed) {
        let staged!: (range: StagedRange) => void;
        const stagedRange = new Promise<StagedRange>((resolve) => (staged = resolve));
        const from = lastKey;
        const loading = withTransaction(sink, async (client) => {
          await client.query(load.CREATE_STAGING(table));
          await pipeline(
            reader.query(copyTo(load.COPY_CHUNK(table, from, opts.chunkRows))),
            client.query(copyFrom(`COPY ${load.stagingTable(table)} FROM STDIN`)),
          );
          const range = (await client.query<StagedRange>(load.STAGED_RANGE(table))).rows[0];
          staged(range);
          if (!range.rows) return;
          const { rows: loaded } = await client.query<LoadedChunk>(load.LOAD_STAGED[table], [lsn]);
          guard(
            (await client.query(ops.ADD_SNAPSHOT_PROGRESS, [opts.pipelineId, loaded[0].rows, epoch]))
              .rowCount,
          );
          return loaded[0];
        }).then(
          (chunk) => {
            if (!chunk) return;
            for (const d of chunk.days ?? []) days.add(d);
            if (chunk.max_event_time && (!maxEventTime || chunk.max_event_time > maxEventTime)) {
              maxEventTime = chunk.max_event_time;
            }
            rows[table] += chunk.rows;
            total += chunk.rows;
            onProgress(total);
          },
          (err) => {
            failed ??= err;
            staged({ rows: 0, last_key: null }); // unblocks the reader loop if the COPY itself failed
          },
        );
        inFlight.add(loading);
        void loading.finally(() => inFlight.delete(loading));
        const range = await stagedRange;
        if (range.rows < opts.chunkRows) break;
        lastKey = range.last_key;
        while (inFlight.size >= LOADS_IN_FLIGHT) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
    }
    if (failed) throw failed;
    await reader.query('COMMIT');
    await withTransaction(sink, async (client) => {
      await client.query(ops.LOCK_CHECKPOINT, [opts.pipelineId]);
      guard(
        (
          await client.query(ops.FINISH_SNAPSHOT, [
            opts.pipelineId,
            formatLsn(consistent),
            total,
            maxEventTime,
            epoch,
          ])
        ).rowCount,
      );
    });
    await refreshDirtyPartitions(sink, opts.pipelineId);
    return {
      consistentLsn: formatLsn(consistent),
      rows,
      seconds: (Date.now() - started) / 1000,
      days: [...days].sort(),
    };
  } finally {
    await reader.end().catch(() => undefined);
    await repl.end().catch(() => undefined);
  }
}
