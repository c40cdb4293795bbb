import type pg from 'pg';
import { withClient, withTransaction } from '../db/client';
import { advanceDwsCursor, lockCheckpoint, readCheckpoint } from './checkpoint';
import * as dws from './dws';
import { partitionKey } from './partition';

/**
 * DWS maintenance: per-user day totals follow DWD by deltas, DWS partitions are recomputed from them (refresh);
 * window close and whole-day recompute check the totals against a from-scratch computation from DWD (drift).
 */

export type RefreshResult = {
  partitions: number;
  statsChanged: number;
  revisions: number;
  /** Changes that arrived for days whose window was already closed (final). */
  lateEvents?: number;
  /** Partitions marked for a rebuild from DWD because a crash had emptied their deltas (dws.RECOVER_LOST_DELTAS). */
  lostDeltaPartitions?: number;
};

/** (day, region) partitions as the parallel arrays the statements take. */
type Partitions = { dates: string[]; regions: number[] };

/** DWD rows changed per day, from the deltas or dirty marks a refresh took (late events when the day is final). */
type ChangesByDay = Map<string, number>;

const NOTHING: RefreshResult = { partitions: 0, statsChanged: 0, revisions: 0 };

const distinct = <T>(values: T[]) => [...new Set(values)];

function addChanges(into: ChangesByDay, byDay: Record<string, number | string>): void {
  for (const [day, n] of Object.entries(byDay)) into.set(day, (into.get(day) ?? 0) + Number(n));
}

/** What the deltas did to a region stats group (day, region id and name); see dws.STATS_FROM_DELTAS. */
type GroupChange = { stat_date: string; region_id: number; region_name: string };
/** What APPLY_DELTAS leaves for STATS_FROM_DELTAS: the groups it moved and the totals it emptied (keys). */
type Applied = { groups: GroupChange[]; emptied: object[] };

async function applyDeltas(client: pg.ClientBase, changes: ChangesByDay): Promise<Applied> {
  await client.query(dws.JOIN_BY_INDEX_ONLY);
  const { rows } = await client.query<Applied & { changes_by_day: object }>(dws.APPLY_DELTAS);
  await client.query(dws.JOIN_BY_ANY_PLAN);
  addChanges(changes, rows[0].changes_by_day as Record<string, string>);
  return { groups: rows[0].groups, emptied: rows[0].emptied };
}

type Refreshed = { result: RefreshResult; revisionsByDay: Record<string, number> };

/** Partitions given as parallel arrays, as a set of their keys. */
const partitionSet = (dates: string[], regions: number[]) =>
  new Set(dates.map((stat_date, i) => partitionKey({ stat_date, region_id: regions[i] })));

/**
 * Region stats of the groups moved by their deltas, except in partitions recomputed whole (`skip`, which also
 * deletes their emptied totals).
 */
async function statsFromDeltas(
  client: pg.ClientBase,
  applied: Applied,
  skip: Partitions,
  reason: string,
): Promise<Refreshed> {
  const skipped = partitionSet(skip.dates, skip.regions);
  const moved = applied.groups.filter((g) => !skipped.has(partitionKey(g)));
  if (!moved.length) return { result: NOTHING, revisionsByDay: {} };
  const { rows } = await client.query(dws.STATS_FROM_DELTAS, [
    JSON.stringify(moved),
    reason,
    JSON.stringify(applied.emptied),
  ]);
  return {
    result: {
      partitions: new Set(moved.map((g) => partitionKey(g))).size,
      statsChanged: rows[0].stats_changed,
      revisions: rows[0].revisions,
    },
    revisionsByDay: rows[0].revisions_by_day,
  };
}

/**
 * Totals rewritten by one rebuild past which the table's statistics are refreshed in the transaction: the region
 * stats statement that follows plans on them, and after a snapshot's first rebuild they said the table was empty
 * (an index walk over every total instead of one scan; 5.2 s instead of about 1 s on 600,000 totals).
 */
const REANALYZE_AFTER_TOTALS = 50_000;

type RebuildResult = { drift: number; totals_changed: number; changes_by_day: Record<string, string> };

async function runRebuild(client: pg.ClientBase, sql: string, parts: Partitions): Promise<RebuildResult> {
  // The per-user grouping of a large day fits in memory with this, instead of spilling to disk.
  await client.query(dws.ENOUGH_WORK_MEM);
  const { rows } = await client.query<RebuildResult>(sql, [
    parts.dates,
    parts.regions,
    distinct(parts.dates),
    distinct(parts.regions),
  ]);
  return rows[0];
}

/** The partitions of the earlier half of their days, and of the later half. */
function splitByDay(parts: Partitions): [Partitions, Partitions] {
  const days = distinct(parts.dates).sort();
  const firstLater = days[Math.ceil(days.length / 2)];
  const halves: [Partitions, Partitions] = [
    { dates: [], regions: [] },
    { dates: [], regions: [] },
  ];
  parts.dates.forEach((date, i) => {
    const half = halves[firstLater !== undefined && date >= firstLater ? 1 : 0];
    half.dates.push(date);
    half.regions.push(parts.regions[i]);
  });
  return halves;
}

/** Where a DWS writer reports what it could not do the fast way (the worker's log). */
export type DwsWarn = (message: string, fields: Record<string, unknown>) => void;

/** A second connection a rebuild may open beside the pool (its settings), and where it reports failing. */
type SpareConnection = { settings: pg.ClientConfig; warn: DwsWarn };

const spareOf = (pool: pg.Pool, warn: DwsWarn): SpareConnection => ({ settings: pool.options, warn });

/**
 * Rebuilds partitions that hold no totals (an initial snapshot: a million DWD rows or more) by inserting their
 * fresh totals. With `spare`, the later half of their days is rebuilt at the same time on a connection of its
 * own, in a transaction of its own, so the rebuild uses two cores. A connection beside the pool, not from it: the
 * pool's connections may all be held by DWS writers waiting for this one's lock. The helper works under this
 * transaction's DWS lock and touches only its own partitions' deltas and totals. If it fails, this connection
 * rebuilds that half too: a helper that rolled back left nothing, and one that committed after all (its answer
 * lost) makes this insert fail on the totals' key, so the refresh fails and the next one rebuilds over them. If
 * it commits and this transaction then fails, its totals are whole and its partitions' marks are still there, so
 * the next refresh rebuilds them again. Until this one commits, readers of the ranking may see the later days'
 * totals before the region stats they add up to (the partitions were empty before).
 */
async function rebuildIntoEmpty(
  client: pg.ClientBase,
  parts: Partitions,
  spare?: SpareConnection,
): Promise<RebuildResult[]> {
  const [earlier, later] = spare ? splitByDay(parts) : [parts, undefined];
  if (!spare || !later?.dates.length) return [await runRebuild(client, dws.REBUILD_TOTALS_INTO_EMPTY, parts)];
  const [own, helped] = await Promise.allSettled([
    runRebuild(client, dws.REBUILD_TOTALS_INTO_EMPTY, earlier),
    withClient(spare.settings, async (other) => {
      await other.query('BEGIN');
      await other.query(dws.NO_JIT);
      const rebuilt = await runRebuild(other, dws.REBUILD_TOTALS_INTO_EMPTY, later);
      await other.query('COMMIT');
      return rebuilt;
    }),
  ]);
  if (own.status === 'rejected') throw own.reason;
  if (helped.status === 'fulfilled') return [own.value, helped.value];
  spare.warn('DWS rebuild: second connection failed, rebuilding its half on one', {
    err: helped.reason instanceof Error ? helped.reason.message : String(helped.reason),
    days: distinct(later.dates).length,
  });
  return [own.value, await runRebuild(client, dws.REBUILD_TOTALS_INTO_EMPTY, later)];
}

/**
 * Rebuilds the partitions' per-user totals from DWD. With `checkDrift` (window close, recompute) returns the totals
 * the incremental state got wrong; marked partitions (snapshot, truncate, repair) have no state to check, and when
 * they hold no totals at all (an initial snapshot) nothing to compare either: the fresh totals are only inserted
 * (see rebuildIntoEmpty for `spare`). Callers hold the DWS lock, so no other writer can add totals between the
 * check and the rebuild.
 */
async function rebuildTotals(
  client: pg.ClientBase,
  parts: Partitions,
  changes: ChangesByDay,
  checkDrift: boolean,
  spare?: SpareConnection,
): Promise<number> {
  if (!parts.dates.length) return 0;
  const empty =
    !checkDrift &&
    !(
      await client.query<{ any: boolean }>(dws.ANY_TOTALS_IN, [
        distinct(parts.dates),
        distinct(parts.regions),
      ])
    ).rows[0].any;
  const results = empty
    ? await rebuildIntoEmpty(client, parts, spare)
    : [await runRebuild(client, checkDrift ? dws.REBUILD_TOTALS : dws.REBUILD_TOTALS_UNCHECKED, parts)];
  const sum = (f: (r: RebuildResult) => number) => results.reduce((n, r) => n + f(r), 0);
  for (const r of results) addChanges(changes, r.changes_by_day);
  if (sum((r) => r.totals_changed) >= REANALYZE_AFTER_TOTALS) await client.query(dws.ANALYZE_TOTALS);
  return sum((r) => r.drift);
}

async function refreshPartitions(
  client: pg.ClientBase,
  parts: Partitions,
  reason: string,
): Promise<Refreshed> {
  if (!parts.dates.length) return { result: NOTHING, revisionsByDay: {} };
  const { rows } = await client.query(dws.REFRESH_PARTITIONS, [parts.dates, parts.regions, reason]);
  return {
    result: {
      partitions: partitionSet(parts.dates, parts.regions).size,
      statsChanged: rows[0].stats_changed,
      revisions: rows[0].revisions,
    },
    revisionsByDay: rows[0].revisions_by_day,
  };
}

/** Both refresh paths' results as one: they cover different partitions. */
function together(a: Refreshed, b: Refreshed): Refreshed {
  const revisionsByDay = { ...a.revisionsByDay };
  for (const [day, n] of Object.entries(b.revisionsByDay))
    revisionsByDay[day] = (revisionsByDay[day] ?? 0) + n;
  return {
    result: {
      partitions: a.result.partitions + b.result.partitions,
      statsChanged: a.result.statsChanged + b.result.statsChanged,
      revisions: a.result.revisions + b.result.revisions,
    },
    revisionsByDay,
  };
}

/**
 * Brings the totals and DWS up to every change committed so far, under the DWS lock: partitions with a dirty mark
 * (snapshot, truncate) rebuilt from DWD and their region stats recomputed from the totals, every pending delta
 * applied to the totals and, in the other partitions, to the region stats; each partition is written once (so a
 * closed day gets one revision per partition however many late changes arrived), marks taken dropped and late
 * events counted. The ranking is a view of the totals. `spare`: a second connection a rebuild into empty
 * partitions may use (see rebuildIntoEmpty).
 */
async function catchUp(client: pg.ClientBase, spare?: SpareConnection): Promise<RefreshResult> {
  const { rows: marks } = await client.query<DirtyMark>(dws.READ_DIRTY_PARTITIONS);
  const marked = { dates: marks.map((m) => m.stat_date), regions: marks.map((m) => m.region_id) };
  const changes: ChangesByDay = new Map();
  await rebuildTotals(client, marked, changes, false, spare);
  const applied = await applyDeltas(client, changes);
  const refreshed = together(
    await refreshPartitions(client, marked, 'late data'),
    await statsFromDeltas(client, applied, marked, 'late data'),
  );
  await dropTakenMarks(client, marks, changes);
  const lateEvents = await countLateEvents(client, changes, refreshed.revisionsByDay);
  return { ...refreshed.result, lateEvents };
}

type DirtyMark = { stat_date: string; region_id: number; changes: string };

/**
 * Drops the marks a refresh or recompute read and took care of. Late events are counted from the marks dropped
 * here; a mark a batch raised again meanwhile is kept and counts with the next refresh.
 */
async function dropTakenMarks(
  client: pg.ClientBase,
  marks: DirtyMark[],
  changes: ChangesByDay,
): Promise<void> {
  if (!marks.length) return;
  const { rows: dropped } = await client.query<{ stat_date: string; changes: string }>(dws.DROP_TAKEN_MARKS, [
    marks.map((m) => m.stat_date),
    marks.map((m) => m.region_id),
    marks.map((m) => m.changes),
  ]);
  addChanges(changes, Object.fromEntries(dropped.map((d) => [d.stat_date, d.changes])));
}

async function countLateEvents(
  client: pg.ClientBase,
  changes: ChangesByDay,
  revisionsByDay: Record<string, number>,
): Promise<number> {
  if (!changes.size) return 0;
  const late = await client.query<{ changes: string }>(dws.COUNT_LATE_EVENTS, [
    [...changes.keys()],
    [...changes.values()],
    JSON.stringify(revisionsByDay),
  ]);
  return late.rows.reduce((n, r) => n + Number(r.changes), 0);
}

/**
 * Runs `fn` in a transaction that holds the DWS lock (one DWS writer at a time) and plans without JIT: every DWS
 * statement runs on estimates past jit_above_cost, and compiling costs more than it saves (see dws.NO_JIT). First
 * it recovers deltas a crash emptied (dws.RECOVER_LOST_DELTAS), says so through `warn` and returns the partitions
 * it marked for a rebuild beside `fn`'s result.
 */
function inDwsTransaction<T extends object>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  warn: DwsWarn,
): Promise<T & { lostDeltaPartitions: number }> {
  return withTransaction(pool, async (client) => {
    await client.query(dws.NO_JIT);
    await client.query(dws.LOCK_DWS);
    const { rows } = await client.query<{ lost: boolean; partitions: number }>(dws.RECOVER_LOST_DELTAS);
    const lostDeltaPartitions = rows[0].lost ? rows[0].partitions : 0;
    if (lostDeltaPartitions > 0)
      warn('DWS deltas lost in a crash of the sink database: their partitions are rebuilt from DWD', {
        partitions: lostDeltaPartitions,
      });
    return { ...(await fn(client)), lostDeltaPartitions };
  });
}

/**
 * Applies every committed DWD change to DWS; late changes to closed days leave revisions. Runs beside batch
 * writes: it reads the confirmed position first, so every batch up to it has its deltas committed and taken by
 * this refresh, and records that position as dws_lsn in the transaction that applies them. The cursor has a row of
 * its own: on the checkpoint row the refresh waited for the batch in flight, holding the DWS lock meanwhile. After an
 * initial snapshot it rebuilds the totals on two connections (rebuildIntoEmpty).
 */
export async function refreshDirtyPartitions(
  pool: pg.Pool,
  pipelineId: string,
  warn: DwsWarn,
): Promise<RefreshResult> {
  const cp = await readCheckpoint(pool, pipelineId);
  if (!cp) throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
  return inDwsTransaction(
    pool,
    async (client) => {
      const result = await catchUp(client, spareOf(pool, warn));
      await advanceDwsCursor(client, pipelineId, cp.epoch, cp.confirmed_lsn);
      return result;
    },
    warn,
  );
}

/**
 * Recomputes the given partitions now from DWD, under the DWS lock like a refresh (repair, which changes DWD
 * without deltas); closed days get revisions with `reason`.
 */
export async function recomputePartitions(
  pool: pg.Pool,
  partitions: { stat_date: string; region_id: number }[],
  reason: string,
  warn: DwsWarn,
): Promise<RefreshResult> {
  if (!partitions.length) return NOTHING;
  return inDwsTransaction(
    pool,
    async (client) => {
      const parts = {
        dates: partitions.map((p) => p.stat_date),
        regions: partitions.map((p) => p.region_id),
      };
      const { rows: marks } = await client.query<DirtyMark>(dws.READ_MARKS_OF_PARTITIONS, [
        parts.dates,
        parts.regions,
      ]);
      const changes: ChangesByDay = new Map();
      await rebuildTotals(client, parts, changes, false);
      const refreshed = await refreshPartitions(client, parts, reason);
      // The repair's own rebuild marks (and any other mark of these partitions) are taken care of now.
      await dropTakenMarks(client, marks, changes);
      const lateEvents = await countLateEvents(client, changes, refreshed.revisionsByDay);
      return { ...refreshed.result, lateEvents };
    },
    warn,
  );
}

export type DayResult = RefreshResult & {
  date: string;
  /** Per-user day totals that differed from the from-scratch computation (must stay 0). */
  totalsDrift: number;
  newlyClosed?: boolean;
};

/**
 * A whole day from scratch, after catching up: its per-user totals rebuilt from DWD (what differed is drift),
 * then its DWS partitions from them (rows changed that catching up did not are drift too).
 */
async function recheckWholeDay(
  client: pg.ClientBase,
  date: string,
  reason: string,
  spare: SpareConnection,
): Promise<Omit<DayResult, 'date'>> {
  await catchUp(client, spare);
  const { rows } = await client.query<{ region_id: number }>(dws.REGIONS_OF_DAY, [date]);
  const day = { dates: rows.map(() => date), regions: rows.map((r) => r.region_id) };
  const changes: ChangesByDay = new Map();
  const totalsDrift = await rebuildTotals(client, day, changes, true);
  const { result, revisionsByDay } = await refreshPartitions(client, day, reason);
  const lateEvents = await countLateEvents(client, changes, revisionsByDay);
  return { ...result, partitions: rows.length, lateEvents, totalsDrift };
}

/**
 * Closes a day's window: final recompute of all its partitions, then is_final on the window and its rows. It
 * runs beside the stream (no checkpoint lock, which stalled every batch for the whole-day recompute): the rebuild
 * takes the deltas of the day it sees in the snapshot it reads DWD in, so a batch committed meanwhile keeps its
 * deltas and the next refresh brings its rows in (as a revision of the now final day).
 */
export async function closeDayWindow(
  pool: pg.Pool,
  pipelineId: string,
  date: string,
  closedBy: string,
  warn: DwsWarn,
): Promise<DayResult> {
  return inDwsTransaction(
    pool,
    async (client) => {
      if (!(await readCheckpoint(client, pipelineId)))
        throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
      const checked = await recheckWholeDay(client, date, 'close', spareOf(pool, warn));
      const { rows } = await client.query<{ newly_closed: boolean }>(dws.CLOSE_WINDOW, [date, closedBy]);
      for (const sql of dws.FINALIZE_DAY_ROWS) await client.query(sql, [date]);
      return { date, ...checked, newlyClosed: rows[0].newly_closed };
    },
    warn,
  );
}

/**
 * Recomputes one day from DWD; the rows it had to change are the drift. After the DWS lock (no refresh) it holds
 * the checkpoint, so no batch can commit (a batch written behind another waits for the row before it commits) and
 * the drift is measured on a still DWD. In that order, so waiting for a long refresh does not hold the checkpoint
 * row and stall the stream.
 */
export async function recomputeDay(
  pool: pg.Pool,
  pipelineId: string | null,
  date: string,
  warn: DwsWarn,
): Promise<DayResult> {
  return inDwsTransaction(
    pool,
    async (client) => {
      if (pipelineId) await lockCheckpoint(client, pipelineId);
      const checked = await recheckWholeDay(client, date, 'recompute', spareOf(pool, warn));
      await client.query(dws.DROP_DIRTY_OF_DAY, [date]);
      return { date, ...checked };
    },
    warn,
  );
}
