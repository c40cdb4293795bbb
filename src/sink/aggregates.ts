import type pg from 'pg';
import * as dws from './dws';
import * as ops from './ops';
import { withTransaction } from './writer';

/** DWS maintenance: refresh of dirty partitions, window close, whole-day recompute. */

export type RefreshResult = {
  partitions: number;
  statsChanged: number;
  rankingChanged: number;
  revisions: number;
  /** Changes that arrived for days whose window was already closed (final). */
  lateEvents?: number;
};

async function refreshPartitions(
  client: pg.ClientBase,
  dates: string[],
  regions: number[],
  reason: string,
): Promise<{ result: RefreshResult; revisionsByDay: Record<string, number> }> {
  // Per-user day totals of a large day fit in memory with this, instead of an on-disk sort (transaction only).
  await client.query(`SET LOCAL work_mem = '64MB'`);
  const { rows } = await client.query(dws.REFRESH_PARTITIONS, [dates, regions, reason]);
  return {
    result: {
      partitions: dates.length,
      statsChanged: rows[0].stats_changed,
      rankingChanged: rows[0].ranking_changed,
      revisions: rows[0].revisions,
    },
    revisionsByDay: rows[0].revisions_by_day,
  };
}

async function lockCheckpoint(client: pg.ClientBase, pipelineId: string): Promise<void> {
  // Same lock order as batch writes (checkpoint first) so refreshes and batches never deadlock.
  const { rowCount } = await client.query(ops.LOCK_CHECKPOINT, [pipelineId]);
  if (!rowCount) throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
}

/** Recomputes every partition DWD changes marked dirty; late changes to closed days leave revisions. */
export async function refreshDirtyPartitions(pool: pg.Pool, pipelineId: string): Promise<RefreshResult> {
  return withTransaction(pool, async (client) => {
    await lockCheckpoint(client, pipelineId);
    const { rows } = await client.query<{ stat_date: string; region_id: number; changes: string }>(
      dws.TAKE_DIRTY_PARTITIONS,
    );
    let result: RefreshResult = { partitions: 0, statsChanged: 0, rankingChanged: 0, revisions: 0 };
    if (rows.length) {
      const dates = rows.map((r) => r.stat_date);
      const refreshed = await refreshPartitions(
        client,
        dates,
        rows.map((r) => r.region_id),
        'late data',
      );
      result = refreshed.result;
      const late = await client.query<{ changes: string }>(dws.COUNT_LATE_EVENTS, [
        dates,
        rows.map((r) => r.changes),
        JSON.stringify(refreshed.revisionsByDay),
      ]);
      result.lateEvents = late.rows.reduce((n, r) => n + Number(r.changes), 0);
    }
    await client.query(dws.SET_DWS_LSN, [pipelineId]);
    return result;
  });
}

export type DayResult = RefreshResult & { date: string; newlyClosed?: boolean };

async function refreshWholeDay(client: pg.ClientBase, date: string, reason: string): Promise<RefreshResult> {
  const { rows } = await client.query<{ region_id: number }>(dws.REGIONS_OF_DAY, [date]);
  const regions = rows.map((r) => r.region_id);
  const { result } = await refreshPartitions(
    client,
    regions.map(() => date),
    regions,
    reason,
  );
  await client.query(dws.DROP_DIRTY_OF_DAY, [date]);
  return result;
}

/** Closes a day's window: final recompute of all its partitions, then is_final on the window and its rows. */
export async function closeDayWindow(
  pool: pg.Pool,
  pipelineId: string,
  date: string,
  closedBy: string,
): Promise<DayResult> {
  return withTransaction(pool, async (client) => {
    await lockCheckpoint(client, pipelineId);
    const refreshed = await refreshWholeDay(client, date, 'close');
    const { rows } = await client.query<{ newly_closed: boolean }>(dws.CLOSE_WINDOW, [date, closedBy]);
    for (const sql of dws.FINALIZE_DAY_ROWS) await client.query(sql, [date]);
    return { date, ...refreshed, newlyClosed: rows[0].newly_closed };
  });
}

/** Recomputes one day from DWD; the rows it had to change are the drift. */
export async function recomputeDay(
  pool: pg.Pool,
  pipelineId: string | null,
  date: string,
): Promise<DayResult> {
  return withTransaction(pool, async (client) => {
    if (pipelineId) await lockCheckpoint(client, pipelineId);
    return { date, ...(await refreshWholeDay(client, date, 'recompute')) };
  });
}
