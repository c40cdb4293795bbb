/**
 * DWS layer SQL: per-user day totals maintained by deltas of DWD changes (rebuilt from DWD where a delta cannot
 * be exact), and per (day, region) partitions recomputed set-based from them; exact numeric sums.
 */
import { CONSUMPTION_TABLE, USER_TABLE } from '../schema/tables';

// Partitions as two parallel arrays: $1 date[], $2 int[].
const PARTITIONS = `p AS (SELECT DISTINCT stat_date, region_id FROM unnest($1::date[], $2::int[]) AS x(stat_date, region_id))`;

const TOTALS_KEY = 'stat_date, region_id, user_id, region_name, user_name';

/** Head of every insert of per-user day totals; the SELECT after it gives the values in this order. */
const INSERT_TOTALS = `INSERT INTO dws_user_day_total (${TOTALS_KEY}, total_consumption, total_cost, detail_rows, max_consumption)`;

/** What a total's deltas (grouped by its key) add to its sums and row count: each delta row is `rows` rows. */
const NET_SUMS =
  'sum(rows * amount) AS total_consumption, sum(rows * cost) AS total_cost, sum(rows) AS detail_rows';

/** Rows `a` and `b` hold the same per-user day total (its whole key). */
const SAME_TOTAL = (a: string, b: string) =>
  `(${a}.stat_date, ${a}.region_id, ${a}.user_id, ${a}.region_name, ${a}.user_name)
    = (${b}.stat_date, ${b}.region_id, ${b}.user_id, ${b}.region_name, ${b}.user_name)`;

/**
 * Per-user day totals of the partitions computed from scratch from DWD, as two CTEs: `dwd_grouped` aggregates
 * over the index range of the days and regions, `fresh` keeps the partitions' rows (the grouping holds day and
 * region, so filtering after it is exact). The grouping is materialized on its own: planned together with the
 * join, it sorted a day's DWD rows (on disk: 57 MB for 1,020,000 rows) to merge-join the groups with p, where a
 * hash of the 20,000 groups fits in memory (27 MB). Needs PARTITIONS as p; $3 and $4 the distinct dates and
 * regions in them.
 */
const TOTALS_FROM_DWD = `
dwd_grouped AS MATERIALIZED (
  SELECT d.consumption_date::date AS stat_date, d.region_id, d.user_id, d.region_name, d.user_name,
    sum(d.consumption_amount) AS total_consumption, sum(d.consumption_cost) AS total_cost,
    count(*) AS detail_rows, max(d.consumption_amount) AS max_consumption
  FROM ${CONSUMPTION_TABLE.dwd} d
  WHERE d.consumption_date::date = ANY($3::date[]) AND d.region_id = ANY($4::int[])
  GROUP BY 1, 2, 3, 4, 5),
fresh AS MATERIALIZED (
  SELECT u.* FROM dwd_grouped u JOIN p ON p.stat_date = u.stat_date AND p.region_id = u.region_id)`;

/**
 * The largest DWD amount of the per-user day total `alias` (its whole key), in the statement's snapshot. Null where
 * DWD no longer holds rows the deltas still count: a truncate (or repair) that committed after the refresh read
 * the dirty marks emptied them without deltas. Callers keep the max the deltas grew instead; the partition's mark
 * makes the next refresh rebuild it from DWD. (A null max beside rows failed the refresh on the region stats' NOT
 * NULL, found by the DWS property test.)
 */
const DWD_MAX_OF = (alias: string) => `(
  SELECT max(d.consumption_amount) FROM ${CONSUMPTION_TABLE.dwd} d
  WHERE d.user_id = ${alias}.user_id AND d.consumption_date::date = ${alias}.stat_date
    AND d.region_id = ${alias}.region_id AND d.region_name = ${alias}.region_name AND d.user_name = ${alias}.user_name)`;

/**
 * Applies every delta batches have committed to the per-user day totals and deletes it, in one statement: one
 * snapshot for the deltas taken and the DWD rows a shrinking max is recomputed from, and one transaction with
 * the deletion, so each delta counts exactly once. Sums and row counts add up; a max only grows by a delta, and
 * is recomputed from the user's DWD rows of that day when a row left at or above both the old max and the largest
 * row added: a row may enter and leave within one refresh, also on a total that is new. Returns, per region stats
 * group (day, region id and name), what the change does to its row (`groups`, see STATS_FROM_DELTAS), the totals
 * it emptied (users who left a group, deleted by STATS_FROM_DELTAS) and the DWD rows changed per day (late events,
 * when the day is closed). A net change the update found no total for makes a new one (under the DWS lock no
 * other writer adds totals): the keys the update returned are matched as a NOT IN, which PostgreSQL checks against
 * a hash of them. As NOT EXISTS (an anti-join) it was planned as a nested loop whenever the planner expected the
 * update to return few rows, which it always does: 40,000 deltas on 600,000 totals took 55 s instead of 0.5 s.
 * Looking each total up once beforehand and updating it by row address cost 2 us more per streamed row.
 */
export const APPLY_DELTAS = `
WITH taken AS MATERIALIZED (DELETE FROM stategrid_dws_delta RETURNING *),
-- The partitions of the deltas taken: applied in this transaction, so no longer at risk (see RECOVER_LOST_DELTAS).
parts_taken AS (DELETE FROM stategrid_dws_delta_parts RETURNING 1),
net AS MATERIALIZED (
  SELECT ${TOTALS_KEY}, ${NET_SUMS}, max(amount) FILTER (WHERE rows > 0) AS added_max,
    max(amount) FILTER (WHERE rows < 0) AS removed_max, sum(abs(rows)) AS touched
  FROM taken GROUP BY 1, 2, 3, 4, 5),
updated AS (
  UPDATE dws_user_day_total t SET total_consumption = t.total_consumption + n.total_consumption,
    total_cost = t.total_cost + n.total_cost, detail_rows = t.detail_rows + n.detail_rows,
    max_consumption = CASE
      WHEN t.detail_rows + n.detail_rows = 0 THEN NULL
      WHEN n.removed_max >= GREATEST(t.max_consumption, n.added_max)
        THEN COALESCE(${DWD_MAX_OF('t')}, GREATEST(t.max_consumption, n.added_max))
      ELSE GREATEST(t.max_consumption, n.added_max) END,
    updated_at = now()
  FROM net n
  WHERE ${SAME_TOTAL('t', 'n')}
  RETURNING t.stat_date, t.region_id, t.user_id, t.region_name, t.user_name, t.detail_rows,
    t.detail_rows - n.detail_rows AS rows_before),
inserted AS (
  ${INSERT_TOTALS}
  SELECT ${TOTALS_KEY}, total_consumption, total_cost, detail_rows,
    CASE WHEN removed_max >= added_max THEN COALESCE(${DWD_MAX_OF('net')}, added_max) ELSE added_max END FROM net
  WHERE detail_rows <> 0 AND (${TOTALS_KEY}) NOT IN (SELECT ${TOTALS_KEY} FROM updated)
  RETURNING stat_date, region_id, region_name, detail_rows),
-- Per group: its sums' change, users who joined (first row) or left (last row gone), the largest amount added
-- and removed. Amounts as text: the groups pass through the worker as JSON, where a number would be a float.
groups AS (
  SELECT stat_date, region_id, region_name, sum(total_consumption)::text AS total_consumption,
    sum(total_cost)::text AS total_cost, max(added_max)::text AS added_max,
    max(removed_max)::text AS removed_max, sum(users) AS users
  FROM (
    SELECT stat_date, region_id, region_name, total_consumption, total_cost, added_max, removed_max, 0 AS users
    FROM net
    UNION ALL
    SELECT stat_date, region_id, region_name, 0, 0, NULL, NULL,
      CASE WHEN rows_before <= 0 AND detail_rows > 0 THEN 1 WHEN rows_before > 0 AND detail_rows <= 0 THEN -1
        ELSE 0 END
    FROM updated
    UNION ALL
    SELECT stat_date, region_id, region_name, 0, 0, NULL, NULL, 1 FROM inserted WHERE detail_rows > 0) x
  GROUP BY 1, 2, 3)
SELECT (SELECT count(*) FROM updated)::int + (SELECT count(*) FROM inserted)::int AS totals_changed,
  (SELECT coalesce(jsonb_agg(g), '[]') FROM groups g) AS groups,
  (SELECT coalesce(jsonb_agg(to_jsonb(u) - 'detail_rows' - 'rows_before'), '[]') FROM updated u
    WHERE u.detail_rows = 0) AS emptied,
  (SELECT coalesce(jsonb_object_agg(stat_date, n), '{}') FROM
    (SELECT stat_date::text, sum(touched)::bigint AS n FROM net GROUP BY 1) x) AS changes_by_day`;

/**
 * The totals of the partitions as the incremental state has them, read over the key's range of their days and
 * regions (a join with p alone read the totals of every day). Needs PARTITIONS as p, $3 and $4 as TOTALS_FROM_DWD.
 */
const CURRENT_TOTALS = `current AS MATERIALIZED (
  SELECT t.* FROM dws_user_day_total t JOIN p ON t.stat_date = p.stat_date AND t.region_id = p.region_id
  WHERE t.stat_date = ANY($3::date[]) AND t.region_id = ANY($4::int[]))`;

/** Takes (deletes) the partitions' pending deltas, as `pending`: a rebuild from DWD already holds what they add. */
const TAKE_PENDING = `pending AS MATERIALIZED (
  DELETE FROM stategrid_dws_delta d USING p WHERE d.stat_date = p.stat_date AND d.region_id = p.region_id
  RETURNING d.*)`;

/** The DWD rows changed per day that `pending` held (late events, when the day is closed). */
const PENDING_BY_DAY = `(SELECT coalesce(jsonb_object_agg(stat_date, n), '{}') FROM
    (SELECT stat_date::text, sum(abs(rows))::bigint AS n FROM pending GROUP BY 1) x) AS changes_by_day`;

/**
 * Drift, for REBUILD_TOTALS: the totals that the incremental state (totals plus pending deltas) got wrong, against
 * `fresh`, each counted once; a max is compared only where no pending delta touched the user, since deltas cannot
 * tell a max exactly. Sums are compared by a full join on the key (hashed or merged: a full join is never a nested
 * loop); the state was first summed by grouping the totals with the deltas and compared by EXCEPT ALL both ways,
 * about 0.1 s more on a day of 20,000 totals. Maxes are read from `diff` (the totals in both whose values differ),
 * without a join of their own: as an inner join of current and fresh it was planned as a nested loop whenever the
 * statistics had not seen the day yet (both estimated at one row): a window close of a 20,000-total day that had
 * just filled took 47 s. The max test is a NOT IN, which PostgreSQL checks against a hash of the pending keys: as
 * NOT EXISTS it was planned as a nested loop over them (15,000 pending deltas that moved maxes: 13 s instead of
 * 0.4 s). Needs `diff` before it.
 */
const TOTALS_DRIFT = `
pending_net AS (
  SELECT ${TOTALS_KEY}, ${NET_SUMS} FROM pending GROUP BY 1, 2, 3, 4, 5),
incremental AS (
  SELECT ${TOTALS_KEY}, coalesce(c.total_consumption, 0) + coalesce(n.total_consumption, 0) AS total_consumption,
    coalesce(c.total_cost, 0) + coalesce(n.total_cost, 0) AS total_cost,
    coalesce(c.detail_rows, 0) + coalesce(n.detail_rows, 0) AS detail_rows
  FROM current c FULL JOIN pending_net n USING (${TOTALS_KEY})
  WHERE coalesce(c.detail_rows, 0) + coalesce(n.detail_rows, 0) <> 0),
sums_drift AS (
  SELECT 1 FROM incremental i FULL JOIN fresh f USING (${TOTALS_KEY})
  WHERE (i.total_consumption, i.total_cost, i.detail_rows)
    IS DISTINCT FROM (f.total_consumption, f.total_cost, f.detail_rows)),
max_drift AS (
  SELECT 1 FROM diff d
  WHERE d.was AND d.is AND d.was_max IS DISTINCT FROM d.max_consumption
    AND (${TOTALS_KEY.replace(/(\w+)/g, 'd.$1')}) NOT IN (SELECT ${TOTALS_KEY} FROM pending)),`;

/**
 * Rebuilds the per-user day totals of the partitions from scratch from DWD, in one statement with taking the
 * partitions' pending deltas (one snapshot: what DWD shows is what those deltas would have added). Only totals
 * whose values changed are written, each by the one statement its case needs (no upsert: on the 600,000 totals
 * of a snapshot, an insert that first probes for a conflict took twice as long, and only DWS writers under the DWS
 * lock write totals). With `checkDrift`, `drift` counts what the incremental state got wrong (TOTALS_DRIFT); a
 * refresh of marked partitions (snapshot, truncate, repair: DWD changed without deltas) has no state to check,
 * and on a snapshot the check cost as much as the rebuild. $1 date[], $2 int[] (partitions), $3 and $4 their
 * distinct dates and regions.
 */
const rebuildTotalsSql = (checkDrift: boolean) => `
WITH ${PARTITIONS},
${TAKE_PENDING},
${TOTALS_FROM_DWD},
${CURRENT_TOTALS},
-- Totals present before or after, whose values differ. A full join (hashed or merged, never a nested loop, which
-- the planner may choose for CTEs it expects to be small: 600,000 x 600,000 totals after a snapshot).
diff AS MATERIALIZED (
  SELECT ${TOTALS_KEY}, c.detail_rows IS NOT NULL AS was, f.detail_rows IS NOT NULL AS is,
    c.max_consumption AS was_max, f.total_consumption, f.total_cost, f.detail_rows, f.max_consumption
  FROM current c FULL JOIN fresh f USING (${TOTALS_KEY})
  WHERE (c.total_consumption, c.total_cost, c.detail_rows, c.max_consumption)
    IS DISTINCT FROM (f.total_consumption, f.total_cost, f.detail_rows, f.max_consumption)),${checkDrift ? TOTALS_DRIFT : ''}
removed AS (
  DELETE FROM dws_user_day_total t USING diff d WHERE ${SAME_TOTAL('t', 'd')} AND NOT d.is
  RETURNING 1),
updated AS (
  UPDATE dws_user_day_total t SET total_consumption = d.total_consumption, total_cost = d.total_cost,
    detail_rows = d.detail_rows, max_consumption = d.max_consumption, updated_at = now()
  FROM diff d WHERE ${SAME_TOTAL('t', 'd')} AND d.was AND d.is
  RETURNING 1),
inserted AS (
  ${INSERT_TOTALS}
  SELECT ${TOTALS_KEY}, total_consumption, total_cost, detail_rows, max_consumption FROM diff WHERE NOT was
  RETURNING 1)
SELECT ${checkDrift ? '(SELECT count(*) FROM sums_drift)::int + (SELECT count(*) FROM max_drift)::int' : '0'} AS drift,
  (SELECT count(*) FROM removed)::int + (SELECT count(*) FROM updated)::int
    + (SELECT count(*) FROM inserted)::int AS totals_changed,
  ${PENDING_BY_DAY}`;

export const REBUILD_TOTALS = rebuildTotalsSql(true);
export const REBUILD_TOTALS_UNCHECKED = rebuildTotalsSql(false);

/**
 * REBUILD_TOTALS_UNCHECKED for partitions that hold no totals (an initial snapshot): every fresh total is
 * inserted, in key order, so each lands on the rightmost leaf of the key's index instead of a random one. On a
 * snapshot's 593,000 totals 5.6-7.8 s against 8.1-11.8 s through the full join (no current totals to compare).
 * Only a DWS writer under the DWS lock, having found the partitions empty, may run it. Same parameters and result.
 */
export const REBUILD_TOTALS_INTO_EMPTY = `
WITH ${PARTITIONS},
${TAKE_PENDING},
${TOTALS_FROM_DWD},
inserted AS (
  ${INSERT_TOTALS}
  SELECT ${TOTALS_KEY}, total_consumption, total_cost, detail_rows, max_consumption FROM fresh
  ORDER BY ${TOTALS_KEY}
  RETURNING 1)
SELECT 0 AS drift, (SELECT count(*) FROM inserted)::int AS totals_changed, ${PENDING_BY_DAY}`;

/** Whether any per-user total exists over the days and regions $1 date[], $2 int[] (all pairs of them). */
export const ANY_TOTALS_IN = `SELECT EXISTS (SELECT 1 FROM dws_user_day_total
  WHERE stat_date = ANY($1::date[]) AND region_id = ANY($2::int[])) AS any`;

/** The region stats columns, in the order revisions record them. */
const STATS_COLUMNS =
  'region_id, region_name, stat_date, total_consumption, total_cost, user_count, max_consumption';

/**
 * Writes the region stats rows of `after` (a CTE, one row per group, user_count 0 for a group that is gone), and
 * a revision per partition of a closed day whose rows changed: `before` and `after` are the partition's rows
 * (CTEs `old` and `{after}_rows`; `p` the partitions), `reason` the parameter holding the revision reason. Only
 * rows whose values changed are written.
 */
const writeStats = (after: string, reason: string) => `
removed AS (
  DELETE FROM dws_region_daily_stats s USING ${after} f
  WHERE (s.stat_date, s.region_id, s.region_name) = (f.stat_date, f.region_id, f.region_name) AND f.user_count <= 0
  RETURNING 1),
upserted AS (
  INSERT INTO dws_region_daily_stats AS s (${STATS_COLUMNS}, is_final, updated_at)
  SELECT ${STATS_COLUMNS.replace(/(\w+)/g, 'f.$1')}, COALESCE(w.is_final, false), now()
  FROM ${after} f LEFT JOIN stategrid_window w ON w.stat_date = f.stat_date
  WHERE f.user_count > 0
  ON CONFLICT (stat_date, region_id, region_name) DO UPDATE SET total_consumption = EXCLUDED.total_consumption,
    total_cost = EXCLUDED.total_cost, user_count = EXCLUDED.user_count, max_consumption = EXCLUDED.max_consumption,
    is_final = EXCLUDED.is_final, updated_at = now()
  WHERE (s.total_consumption, s.total_cost, s.user_count, s.max_consumption, s.is_final)
    IS DISTINCT FROM (EXCLUDED.total_consumption, EXCLUDED.total_cost, EXCLUDED.user_count,
      EXCLUDED.max_consumption, EXCLUDED.is_final)
  RETURNING 1),
revised AS (
  INSERT INTO dws_revision (stat_date, region_id, reason, before, after)
  SELECT r.stat_date, r.region_id, ${reason}, r.before, r.after FROM (
    SELECT p.stat_date, p.region_id,
      (SELECT jsonb_agg(to_jsonb(o) ORDER BY o.region_name) FROM old o
        WHERE o.stat_date = p.stat_date AND o.region_id = p.region_id) AS before,
      (SELECT jsonb_agg(to_jsonb(f) ORDER BY f.region_name) FROM ${after}_rows f
        WHERE f.stat_date = p.stat_date AND f.region_id = p.region_id) AS after
    FROM p JOIN stategrid_window w ON w.stat_date = p.stat_date AND w.is_final) r
  WHERE r.before IS DISTINCT FROM r.after
  RETURNING stat_date)
SELECT (SELECT count(*) FROM removed)::int + (SELECT count(*) FROM upserted)::int AS stats_changed,
  (SELECT count(*) FROM revised)::int AS revisions,
  (SELECT coalesce(jsonb_object_agg(stat_date, n), '{}') FROM
    (SELECT stat_date::text, count(*) AS n FROM revised GROUP BY 1) x) AS revisions_by_day`;

const OLD_STATS = `old AS MATERIALIZED (
  SELECT ${STATS_COLUMNS.replace(/(\w+)/g, 's.$1')}
  FROM dws_region_daily_stats s JOIN p ON s.stat_date = p.stat_date AND s.region_id = p.region_id)`;

/**
 * Recomputes the region stats of the partitions from their per-user day totals (no DWD detail row is read):
 * distinct users are the users with rows, the max the largest user max. Deletes totals of users who left, and
 * returns changed rows and revisions of closed days: one per partition and refresh, however many changes it took
 * in. The ranking is a view over the same totals (sql/03_sink.sql). $1 date[], $2 int[] (partitions), $3 revision
 * reason.
 */
export const REFRESH_PARTITIONS = `
WITH ${PARTITIONS},
emptied AS (
  DELETE FROM dws_user_day_total t USING p
  WHERE t.stat_date = p.stat_date AND t.region_id = p.region_id AND t.detail_rows = 0
  RETURNING 1),
${OLD_STATS},
fresh_rows AS MATERIALIZED (
  SELECT t.region_id, t.region_name, t.stat_date, sum(t.total_consumption) AS total_consumption,
    sum(t.total_cost) AS total_cost, count(DISTINCT t.user_id) AS user_count, max(t.max_consumption) AS max_consumption
  FROM dws_user_day_total t JOIN p ON t.stat_date = p.stat_date AND t.region_id = p.region_id
  WHERE t.detail_rows > 0
  GROUP BY t.region_id, t.region_name, t.stat_date),
-- Groups the partitions had and no longer have: user_count 0 deletes them.
fresh AS (
  SELECT * FROM fresh_rows
  UNION ALL
  SELECT o.region_id, o.region_name, o.stat_date, 0, 0, 0, 0 FROM old o
  WHERE NOT EXISTS (SELECT 1 FROM fresh_rows f
    WHERE (f.stat_date, f.region_id, f.region_name) = (o.stat_date, o.region_id, o.region_name))),
${writeStats('fresh', '$3')}`;

/**
 * Moves the region stats rows of groups by the change APPLY_DELTAS saw in their totals: sums add up, user_count
 * by the users who joined or left, the max grows to the largest added amount; where a row left (or changed) at
 * or above both the group's max and the largest added amount, the max is read again from the group's totals (this
 * transaction's, after the deltas): also in a group new in this refresh, whose largest added row may have left
 * again (where the totals hold no row for it, as after a truncate the refresh did not see, the grown max stands
 * until the partition's rebuild; see DWD_MAX_OF). Exact, like the whole-partition recompute the window close checks
 * it against. Deletes the totals the deltas emptied. $1 the groups as JSON, $2 revision reason, $3 the emptied
 * totals' keys as JSON.
 */
export const STATS_FROM_DELTAS = `
WITH gone AS (
  DELETE FROM dws_user_day_total t USING jsonb_to_recordset($3::jsonb)
    AS x(stat_date date, region_id int, user_id bigint, region_name text, user_name text)
  WHERE ${SAME_TOTAL('t', 'x')} AND t.detail_rows = 0),
g AS MATERIALIZED (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(stat_date date, region_id int, region_name text,
    total_consumption numeric, total_cost numeric, users bigint, added_max numeric, removed_max numeric)),
p AS (SELECT DISTINCT stat_date, region_id FROM g),
${OLD_STATS},
fresh AS MATERIALIZED (
  SELECT g.region_id, g.region_name, g.stat_date,
    COALESCE(o.total_consumption, 0) + g.total_consumption AS total_consumption,
    COALESCE(o.total_cost, 0) + g.total_cost AS total_cost, COALESCE(o.user_count, 0) + g.users AS user_count,
    CASE WHEN g.removed_max >= GREATEST(o.max_consumption, g.added_max) THEN COALESCE((
      SELECT max(t.max_consumption) FROM dws_user_day_total t
      WHERE (t.stat_date, t.region_id, t.region_name) = (g.stat_date, g.region_id, g.region_name)
        AND t.detail_rows > 0), GREATEST(o.max_consumption, g.added_max))
    ELSE GREATEST(o.max_consumption, g.added_max) END AS max_consumption
  FROM g LEFT JOIN old o ON (o.stat_date, o.region_id, o.region_name) = (g.stat_date, g.region_id, g.region_name)),
fresh_rows AS (
  SELECT * FROM fresh WHERE user_count > 0
  UNION ALL
  SELECT * FROM old o WHERE NOT EXISTS (SELECT 1 FROM g
    WHERE (g.stat_date, g.region_id, g.region_name) = (o.stat_date, o.region_id, o.region_name))),
${writeStats('fresh', '$2')}`;

/**
 * APPLY_DELTAS finds the totals its deltas touch by their key's index, never by hashing every total: the planner
 * hashed all of them once a refresh took tens of thousands of deltas, a cost that grows with the days kept rather
 * than with the changes (600,000 totals: DWS current 1.45 s after ODS+DWD at the end of a 200,000-row burst,
 * 0.97 s by the index). With the other join methods off for that one statement, the update joins by a nested loop
 * over the key's index.
 */
export const JOIN_BY_INDEX_ONLY = `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off`;
export const JOIN_BY_ANY_PLAN = `SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT`;

/** Per-user day totals of a large day fit in memory with this, instead of an on-disk sort (transaction only). */
export const ENOUGH_WORK_MEM = `SET LOCAL work_mem = '64MB'`;

/**
 * For every DWS transaction. A refresh's statements run every second or so on estimates past jit_above_cost:
 * compiling them each time cost more than running them interpreted (LLVM was about a twelfth of the refresh
 * connection's CPU while streaming). A whole-day rebuild (window close, recompute) crosses jit_inline_above_cost
 * and jit_optimize_above_cost once its day is large enough for the estimates: inlining and optimizing its one
 * statement then took about 1.5 s more than running it (a 2,334,400-row day: 1.75-2.06x a plain GROUP BY with
 * JIT, 1.03-1.15x without), and whether it crossed depended on the table's latest statistics.
 */
export const NO_JIT = `SET LOCAL jit = off`;

/**
 * Fresh statistics of the totals, inside the DWS transaction (ANALYZE may run there; a sink role that does not own
 * the table gets a warning, not an error, and keeps autovacuum's statistics).
 */
export const ANALYZE_TOTALS = `ANALYZE dws_user_day_total`;

/**
 * DWS writers (refresh, window close, recompute) serialize on this transaction lock; batches never take it, so a
 * refresh does not hold up the stream. Batches and refreshes only meet on dirty marks (see DROP_TAKEN_MARKS).
 */
export const LOCK_DWS = `SELECT pg_advisory_xact_lock(hashtext('stategrid_dws'))`;

/**
 * Run by every DWS writer right after LOCK_DWS. The deltas are unlogged: a crash of the sink's PostgreSQL (or a
 * standby promoted in its place) empties them, deltas of batches that had committed included, and empties the
 * sentinel row stategrid_dws_delta_intact with them. A writer that finds the sentinel gone marks every partition
 * whose deltas may be lost (stategrid_dws_delta_parts, logged, written with the deltas) for a rebuild from DWD,
 * which the refresh (catchUp) does before it applies any delta, and puts the sentinel back, all in its
 * transaction. Deltas written after the crash are in marked partitions too: the rebuild takes them (TAKE_PENDING).
 * On a new or upgraded sink the sentinel is missing once, with no partition to mark. A statement of its own, not
 * part of LOCK_DWS's: its snapshot must be taken after the lock is granted, or it would not see the sentinel a
 * writer that held the lock put back (nor the marks that writer took) and would mark again.
 */
export const RECOVER_LOST_DELTAS = `
WITH lost AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM stategrid_dws_delta_intact) AS lost),
parts AS MATERIALIZED (
  SELECT DISTINCT stat_date, region_id FROM stategrid_dws_delta_parts WHERE (SELECT lost FROM lost)),
marked AS (
  INSERT INTO stategrid_dws_dirty (stat_date, region_id, changes)
  SELECT stat_date, region_id, 0 FROM parts ORDER BY 1, 2
  ON CONFLICT (stat_date, region_id) DO NOTHING),
intact AS (INSERT INTO stategrid_dws_delta_intact SELECT true WHERE (SELECT lost FROM lost))
SELECT (SELECT lost FROM lost) AS lost, (SELECT count(*) FROM parts)::int AS partitions`;

export const READ_DIRTY_PARTITIONS = `SELECT stat_date::text, region_id, changes FROM stategrid_dws_dirty`;
export const READ_MARKS_OF_PARTITIONS = `SELECT d.stat_date::text, d.region_id, d.changes FROM stategrid_dws_dirty d
  JOIN unnest($1::date[], $2::int[]) AS p(stat_date, region_id) ON d.stat_date = p.stat_date AND d.region_id = p.region_id`;
export const READ_DIRTY_OF_DAY = `SELECT region_id, changes FROM stategrid_dws_dirty WHERE stat_date = $1::date`;

/**
 * Drops the marks a refresh has taken care of: only those still holding the count it read (a batch that marked
 * the partition again meanwhile keeps it for the next refresh), and never waiting on a mark a batch holds (so a
 * refresh cannot deadlock with a batch). $1 date[], $2 int[], $3 bigint[] counts read.
 */
export const DROP_TAKEN_MARKS = `
DELETE FROM stategrid_dws_dirty WHERE ctid IN (
  SELECT d.ctid FROM stategrid_dws_dirty d
  JOIN unnest($1::date[], $2::int[], $3::bigint[]) AS x(stat_date, region_id, changes)
    ON d.stat_date = x.stat_date AND d.region_id = x.region_id AND d.changes = x.changes
  FOR UPDATE OF d SKIP LOCKED)
RETURNING stat_date::text, changes`;

export const COUNT_LATE_EVENTS = `
UPDATE stategrid_window w SET late_events = w.late_events + x.changes,
  revisions = w.revisions + COALESCE(($3::jsonb ->> w.stat_date::text)::int, 0)
FROM (SELECT stat_date, sum(changes) AS changes FROM unnest($1::date[], $2::bigint[]) AS u(stat_date, changes)
  GROUP BY stat_date) x
WHERE w.stat_date = x.stat_date AND w.is_final
RETURNING x.changes`;

/**
 * Every region a day can have rows in: DWD details take their region from the current DWD user (and are
 * re-enriched when it changes), so the regions of DWD users cover them, without scanning the day; plus the
 * regions DWS still has for the day, so stale rows go.
 */
export const REGIONS_OF_DAY = `
SELECT region_id FROM ${USER_TABLE.dwd} WHERE region_id IS NOT NULL
UNION SELECT region_id FROM dws_user_day_total WHERE stat_date = $1::date
UNION SELECT region_id FROM dws_region_daily_stats WHERE stat_date = $1::date`;

export const CLOSE_WINDOW = `
INSERT INTO stategrid_window (stat_date, is_final, closed_at, closed_by) VALUES ($1::date, true, now(), $2)
ON CONFLICT (stat_date) DO UPDATE SET is_final = true,
  closed_at = COALESCE(stategrid_window.closed_at, EXCLUDED.closed_at),
  closed_by = COALESCE(stategrid_window.closed_by, EXCLUDED.closed_by)
RETURNING (xmax = 0) AS newly_closed`;

export const FINALIZE_DAY_ROWS = [
  `UPDATE dws_region_daily_stats SET is_final = true, updated_at = now() WHERE stat_date = $1::date AND NOT is_final`,
];

export const DROP_DIRTY_OF_DAY = `DELETE FROM stategrid_dws_dirty WHERE stat_date = $1::date`;
