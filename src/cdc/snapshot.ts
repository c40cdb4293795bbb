import pg from 'pg';
import { quoteIdent } from '../db/sql';
import { refreshDirtyPartitions } from '../sink/aggregates';
import * as ops from '../sink/ops';
import { applySnapshotRows, withTransaction } from '../sink/writer';
import { formatLsn, parseLsn, PRIMARY_KEY, SOURCE_TABLES, type Row } from './changes';
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

const COLUMNS: Record<string, string> = {
  power_user: 'user_id, user_name, usage_type, region_id, region_name, update_time',
  power_consumption: 'consumption_id, user_id, consumption_amount, consumption_cost, consumption_date',
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
    // Users first, so consumptions join to them as they land.
    for (const table of SOURCE_TABLES) {
      rows[table] = 0;
      await reader.query(
        `DECLARE snap_${table} NO SCROLL CURSOR FOR SELECT ${COLUMNS[table]} FROM ${quoteIdent(table)} ORDER BY ${PRIMARY_KEY[table]}`,
      );
      for (;;) {
        const chunk = await reader.query<Row>(`FETCH ${opts.chunkRows} FROM snap_${table}`);
        if (!chunk.rows.length) break;
        const result = await withTransaction(sink, async (client) => {
          const r = await applySnapshotRows(client, table, chunk.rows.map(stringify), consistent);
          guard(
            (
              await client.query(ops.SET_SNAPSHOT_PROGRESS, [
                opts.pipelineId,
                total + chunk.rows.length,
                epoch,
              ])
            ).rowCount,
          );
          return r;
        });
        for (const d of result.days) days.add(d);
        if (result.maxEventTime && (!maxEventTime || result.maxEventTime > maxEventTime)) {
          maxEventTime = result.maxEventTime;
        }
        rows[table] += chunk.rows.length;
        total += chunk.rows.length;
        onProgress(total);
      }
    }
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

function stringify(row: Row): Row {
  const out: Row = {};
  for (const k of Object.keys(row)) out[k] = row[k] === null ? null : String(row[k]);
  return out;
}
