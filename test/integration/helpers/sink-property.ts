import pg from 'pg';
import type { Change, RowChange, TruncateChange } from '../../../src/cdc/changes';
import { loadConfig } from '../../../src/config';
import { ensureDatabaseExists } from '../../../src/db/admin';
import { keepValuesAsText, openPool, withClient } from '../../../src/db/client';
import { readSqlFile } from '../../../src/db/sql';
import { PgBatchSink, type PreparedBatch } from '../../../src/sink/writer';

/**
 * What the property tests that drive the sink's write paths directly (no worker, no stream) share: a database of
 * their own with the sink's schema, a fresh streaming checkpoint per case, changes stamped with their place in
 * the stream and cut into batches, and the batches written as the capture writes them.
 */

/** A change as the source streams it, before its place in the stream (transaction and sequence) is known. */
export type Emitted = Omit<RowChange, 'columns'> | TruncateChange;

/** How many batches the cases wrote, and how many of them behind another: the path must be exercised. */
export type BatchPaths = { batches: number; behind: number };

export class SinkPropertyDb {
  readonly pool: pg.Pool;
  private emptyAll = '';

  constructor(private readonly database: string) {
    const url = new URL(loadConfig().sinkUrl);
    url.pathname = `/${database}`;
    this.pool = openPool({ connectionString: url.toString(), max: 4 });
  }

  /** Creates the database and the sink's tables, runs `setup`; a case empties every table but those in `kept`. */
  async open(setup = '', kept: string[] = []): Promise<void> {
    keepValuesAsText();
    const admin = new URL(loadConfig().sinkUrl);
    admin.pathname = '/postgres';
    await withClient(admin.toString(), (client) => ensureDatabaseExists(client, this.database));
    await this.pool.query(readSqlFile('03_sink.sql'));
    await this.pool.query(readSqlFile('05_dwd_indexes.sql'));
    if (setup) await this.pool.query(setup);
    const { rows } = await this.pool.query<{ t: string }>(
      `SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public' AND NOT tablename = ANY($1)`,
      [kept],
    );
    // By DELETE: a TRUNCATE per case bloats the catalog (pg_class).
    this.emptyAll = rows.map((r) => `DELETE FROM ${r.t};`).join(' ');
  }

  /** Empties the tables and starts pipeline `pipelineId` streaming: the sink of its epoch. */
  async freshSink(pipelineId: string): Promise<PgBatchSink> {
    await this.pool.query(this.emptyAll);
    const { rows } = await this.pool.query<{ epoch: string }>(
      `INSERT INTO stategrid_checkpoint (pipeline_id, slot_name, phase, epoch)
       VALUES ($1, 'none', 'streaming', 1) RETURNING epoch::text`,
      [pipelineId],
    );
    return new PgBatchSink(this.pool, pipelineId, rows[0].epoch);
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

/**
 * The batches of one step: each transaction's changes stamped with its LSN (after `lsn.at`, which advances) and
 * their sequence, then cut into one batch, or two when `twoInFlight` (the first transaction, then the rest).
 */
export function batchesOf(
  sink: PgBatchSink,
  transactions: Emitted[][],
  lsn: { at: bigint },
  twoInFlight: boolean,
): PreparedBatch[] {
  const stamped = transactions.map((emitted) => {
    lsn.at += 0x100n;
    return emitted.map((e, i) => ({ ...e, txLsn: lsn.at, seq: i + 1, commitTime: null }) as Change);
  });
  const cut = twoInFlight ? 1 : stamped.length;
  return [stamped.slice(0, cut).flat(), stamped.slice(cut).flat()]
    .filter((changes) => changes.length)
    .map((changes) => sink.prepare({ changes, endLsn: changes[changes.length - 1].txLsn }));
}

/**
 * Writes the batches as the capture does: the second behind the first while it is in the sink when both only
 * insert new consumptions (applyBehind), otherwise after it.
 */
export async function writeBatches(
  sink: PgBatchSink,
  [first, second]: PreparedBatch[],
  paths: BatchPaths,
): Promise<void> {
  paths.batches += [first, second].filter(Boolean).length;
  if (!first) return;
  const lsnOf = (b: PreparedBatch) => b.changes[b.changes.length - 1].txLsn;
  const firstDone = sink.apply(first, lsnOf(first));
  const behind = second ? await sink.applyBehind(second, first, firstDone, lsnOf(second)) : null;
  await firstDone;
  if (behind) paths.behind++;
  if (second && !behind) await sink.apply(second, lsnOf(second));
}
