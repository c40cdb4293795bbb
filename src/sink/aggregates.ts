import type pg from 'pg';
import { withTransaction } from '../db/client';
import { advanceDwsCursor, lockCheckpoint, readCheckpoint } from './checkpoint';
import * as dws from './dws';

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
  await client.query(dws.ENOUGH_WORK_MEM);
  const { rows } = await client.query(dws.REFRESH_PARTITIONS, [
    dates,
    regions,
    reason,
    [...new Set(dates)],
    [...new Set(regions)],
  ]);
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

/**
 * Recompute: no refresh (DWS lock), then no batch in flight (checkpoint), so its drift is measured on a still
 * DWD. In that order, so waiting for a long refresh does not hold the checkpoint row and stall the stream.
 */
async function lockForWholeDay(client: pg.ClientBase, pipelineId: string | null): Promise<void> {
  await client.query(dws.LOCK_DWS);
  if (pipelineId) await lockCheckpoint(client, pipelineId);
}

/**
 * Recomputes every partition DWD changes marked dirty; late changes to closed days leave revisions. Runs beside
 * batch writes (no checkpoint lock): it reads the confirmed position first, so every batch up to it has its marks
 * committed and seen by the refresh, and records that position as dws_lsn after it commits.
 */
export async function refreshDirtyPartitions(pool: pg.Pool, pipelineId: string): Promise<RefreshResult> {
  const cp = await readCheckpoint(pool, pipelineId);
  if (!cp) throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
  const result = await withTransaction(pool, async (client) => {
    await client.query(dws.LOCK_DWS);
    const { rows } = await client.query<{ stat_date: string; region_id: number; changes: string }>(
      dws.READ_DIRTY_PARTITIONS,
    );
    if (!rows.length) return { partitions: 0, statsChanged: 0, rankingChanged: 0, revisions: 0 };
    const dates = rows.map((r) => r.stat_date);
    const regions = rows.map((r) => r.region_id);
    const counts = rows.map((r) => r.changes);
    const refreshed = await refreshPartitions(client, dates, regions, 'late data');
    // Late events are counted from the marks dropped here; a mark kept for the next refresh counts then.
    const { rows: dropped } = await client.query<{ stat_date: string; changes: string }>(
      dws.DROP_TAKEN_MARKS,
      [dates, regions, counts],
    );
    const late = await client.query<{ changes: string }>(dws.COUNT_LATE_EVENTS, [
      dropped.map((d) => d.stat_date),
      dropped.map((d) => d.changes),
      JSON.stringify(refreshed.revisionsByDay),
    ]);
    return { ...refreshed.result, lateEvents: late.rows.reduce((n, r) => n + Number(r.changes), 0) };
  });
  await advanceDwsCursor(pool, pipelineId, cp.confirmed_lsn);
  return result;
}

/**
 * Recomputes the given partitions now, under the DWS lock like a refresh (repair). Their dirty marks stay for the
 * refresher, which then finds nothing to change; closed days get revisions with `reason`.
 */
export async function recomputePartitions(
  pool: pg.Pool,
  partitions: { stat_date: string; region_id: number }[],
  reason: string,
): Promise<RefreshResult> {
  if (!partitions.length) return { partitions: 0, statsChanged: 0, rankingChanged: 0, revisions: 0 };
  return withTransaction(pool, async (client) => {
    await client.query(dws.LOCK_DWS);
    const refreshed = await refreshPartitions(
      client,
      partitions.map((p) => p.stat_date),
      partitions.map((p) => p.region_id),
      reason,
    );
    return refreshed.result;
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
  return result;
}

/**
 * Closes a day's window: final recompute of all its partitions, then is_final on the window and its rows. It
 * runs beside the stream (no checkpoint lock, which stalled every batch for the whole-day recompute): like a
 * refresh it drops only the day's marks it read before recomputing, so a batch committed meanwhile keeps its
 * marks and the next refresh brings its rows in (as a revision of the now final day).
 */
export async function closeDayWindow(
  pool: pg.Pool,
  pipelineId: string,
  date: string,
  closedBy: string,
): Promise<DayResult> {
  return withTransaction(pool, async (client) => {
    await client.query(dws.LOCK_DWS);
    if (!(await readCheckpoint(client, pipelineId)))
      throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
    const { rows: marks } = await client.query<{ region_id: number; changes: string }>(
      dws.READ_DIRTY_OF_DAY,
      [date],
    );
    const refreshed = await refreshWholeDay(client, date, 'close');
    await client.query(dws.DROP_TAKEN_MARKS, [
      marks.map(() => date),
      marks.map((m) => m.region_id),
      marks.map((m) => m.changes),
    ]);
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
    await lockForWholeDay(client, pipelineId);
    const refreshed = await refreshWholeDay(client, date, 'recompute');
    await client.query(dws.DROP_DIRTY_OF_DAY, [date]);
    return { date, ...refreshed };
  });
}
