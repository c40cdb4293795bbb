/** DWS layer SQL: per (day, region) partitions recomputed set-based from DWD; exact numeric sums. */
import { CONSUMPTION_TABLE, USER_TABLE } from '../schema/tables';

// Partitions as two parallel arrays: $1 date[], $2 int[].
const PARTITIONS = `p AS (SELECT DISTINCT stat_date, region_id FROM unnest($1::date[], $2::int[]) AS x(stat_date, region_id))`;

/**
 * Recomputes both DWS tables for the partitions from one pass over DWD: per-user day totals first (the ranking
 * rows), region stats rolled up from them. Returns changed rows per table and revisions of closed days.
 * $1 date[], $2 int[] (partitions), $3 revision reason, $4 and $5 the distinct dates and regions in them.
 */
export const REFRESH_PARTITIONS = `
WITH ${PARTITIONS},
per_user AS MATERIALIZED (
  -- Aggregated first over the index range of the dirty days and regions, then kept only for the dirty
  -- partitions: the grouping holds day and region, so filtering after it is exact and joins 1 row per user.
  SELECT u.* FROM (
    SELECT d.consumption_date::date AS stat_date, d.user_id, d.user_name, d.region_id, d.region_name,
      sum(d.consumption_amount) AS total_consumption, sum(d.consumption_cost) AS total_cost,
      max(d.consumption_amount) AS max_consumption
    FROM ${CONSUMPTION_TABLE.dwd} d
    WHERE d.consumption_date::date = ANY($4::date[]) AND d.region_id = ANY($5::int[])
    GROUP BY 1, d.user_id, d.user_name, d.region_id, d.region_name) u
  JOIN p ON p.stat_date = u.stat_date AND p.region_id = u.region_id),
fresh AS (
  SELECT region_id, region_name, stat_date, sum(total_consumption) AS total_consumption,
    sum(total_cost) AS total_cost, count(DISTINCT user_id) AS user_count, max(max_consumption) AS max_consumption
  FROM per_user GROUP BY region_id, region_name, stat_date),
ranked AS (
  SELECT stat_date, user_id, user_name, region_id, region_name, total_consumption, total_cost,
    row_number() OVER (PARTITION BY stat_date, region_id ORDER BY total_consumption DESC, user_id ASC) AS ranking
  FROM per_user),
old AS (
  SELECT s.region_id, s.region_name, s.stat_date, s.total_consumption, s.total_cost, s.user_count, s.max_consumption
  FROM dws_region_daily_stats s JOIN p ON s.stat_date = p.stat_date AND s.region_id = p.region_id),
removed AS (
  DELETE FROM dws_region_daily_stats s USING p
  WHERE s.stat_date = p.stat_date AND s.region_id = p.region_id
    -- NOT IN over a CTE is a hashed subplan; NOT EXISTS let the planner pick a nested loop over it.
    AND (s.stat_date, s.region_id, s.region_name) NOT IN (SELECT stat_date, region_id, region_name FROM fresh)
  RETURNING 1),
upserted AS (
  INSERT INTO dws_region_daily_stats AS s (region_id, region_name, stat_date, total_consumption, total_cost,
    user_count, max_consumption, is_final, updated_at)
  SELECT f.region_id, f.region_name, f.stat_date, f.total_consumption, f.total_cost, f.user_count, f.max_consumption,
    COALESCE(w.is_final, false), now()
  FROM fresh f LEFT JOIN stategrid_window w ON w.stat_date = f.stat_date
  ON CONFLICT (stat_date, region_id, region_name) DO UPDATE SET total_consumption = EXCLUDED.total_consumption,
    total_cost = EXCLUDED.total_cost, user_count = EXCLUDED.user_count, max_consumption = EXCLUDED.max_consumption,
    is_final = EXCLUDED.is_final, updated_at = now()
  WHERE (s.total_consumption, s.total_cost, s.user_count, s.max_consumption, s.is_final)
    IS DISTINCT FROM (EXCLUDED.total_consumption, EXCLUDED.total_cost, EXCLUDED.user_count,
      EXCLUDED.max_consumption, EXCLUDED.is_final)
  RETURNING 1),
revised AS (
  INSERT INTO dws_revision (stat_date, region_id, reason, before, after)
  SELECT r.stat_date, r.region_id, $3, r.before, r.after FROM (
    SELECT p.stat_date, p.region_id,
      (SELECT jsonb_agg(to_jsonb(o) ORDER BY o.region_name) FROM old o
        WHERE o.stat_date = p.stat_date AND o.region_id = p.region_id) AS before,
      (SELECT jsonb_agg(to_jsonb(f) ORDER BY f.region_name) FROM fresh f
        WHERE f.stat_date = p.stat_date AND f.region_id = p.region_id) AS after
    FROM p JOIN stategrid_window w ON w.stat_date = p.stat_date AND w.is_final) r
  WHERE r.before IS DISTINCT FROM r.after
  RETURNING stat_date),
removed_ranks AS (
  DELETE FROM dws_user_ranking r USING p
  WHERE r.stat_date = p.stat_date AND r.region_id = p.region_id
    AND (r.stat_date, r.user_id) NOT IN (SELECT stat_date, user_id FROM ranked)
  RETURNING 1),
upserted_ranks AS (
  INSERT INTO dws_user_ranking AS r (stat_date, user_id, user_name, region_id, region_name, total_consumption,
    total_cost, ranking, is_final, updated_at)
  SELECT f.stat_date, f.user_id, f.user_name, f.region_id, f.region_name, f.total_consumption, f.total_cost,
    f.ranking, COALESCE(w.is_final, false), now()
  FROM ranked f LEFT JOIN stategrid_window w ON w.stat_date = f.stat_date
  ON CONFLICT (stat_date, user_id) DO UPDATE SET user_name = EXCLUDED.user_name, region_id = EXCLUDED.region_id,
    region_name = EXCLUDED.region_name, total_consumption = EXCLUDED.total_consumption,
    total_cost = EXCLUDED.total_cost, ranking = EXCLUDED.ranking, is_final = EXCLUDED.is_final, updated_at = now()
  WHERE (r.user_name, r.region_id, r.region_name, r.total_consumption, r.total_cost, r.ranking, r.is_final)
    IS DISTINCT FROM (EXCLUDED.user_name, EXCLUDED.region_id, EXCLUDED.region_name, EXCLUDED.total_consumption,
      EXCLUDED.total_cost, EXCLUDED.ranking, EXCLUDED.is_final)
  RETURNING 1)
SELECT (SELECT count(*) FROM removed)::int + (SELECT count(*) FROM upserted)::int AS stats_changed,
  (SELECT count(*) FROM removed_ranks)::int + (SELECT count(*) FROM upserted_ranks)::int AS ranking_changed,
  (SELECT count(*) FROM revised)::int AS revisions,
  (SELECT coalesce(jsonb_object_agg(stat_date, n), '{}') FROM
    (SELECT stat_date::text, count(*) AS n FROM revised GROUP BY 1) x) AS revisions_by_day`;

/**
 * DWS writers (refresh, window close, recompute) serialize on this transaction lock; batches never take it, so a
 * refresh does not hold up the stream. Batches and refreshes only meet on dirty marks (see DROP_TAKEN_MARKS).
 */
/** Per-user day totals of a large day fit in memory with this, instead of an on-disk sort (transaction only). */
export const ENOUGH_WORK_MEM = `SET LOCAL work_mem = '64MB'`;

export const LOCK_DWS = `SELECT pg_advisory_xact_lock(hashtext('stategrid_dws'))`;

export const READ_DIRTY_PARTITIONS = `SELECT stat_date::text, region_id, changes FROM stategrid_dws_dirty`;
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
UNION SELECT region_id FROM dws_region_daily_stats WHERE stat_date = $1::date
UNION SELECT region_id FROM dws_user_ranking WHERE stat_date = $1::date`;

export const CLOSE_WINDOW = `
INSERT INTO stategrid_window (stat_date, is_final, closed_at, closed_by) VALUES ($1::date, true, now(), $2)
ON CONFLICT (stat_date) DO UPDATE SET is_final = true,
  closed_at = COALESCE(stategrid_window.closed_at, EXCLUDED.closed_at),
  closed_by = COALESCE(stategrid_window.closed_by, EXCLUDED.closed_by)
RETURNING (xmax = 0) AS newly_closed`;

export const FINALIZE_DAY_ROWS = [
  `UPDATE dws_region_daily_stats SET is_final = true, updated_at = now() WHERE stat_date = $1::date AND NOT is_final`,
  `UPDATE dws_user_ranking SET is_final = true, updated_at = now() WHERE stat_date = $1::date AND NOT is_final`,
];

export const DROP_DIRTY_OF_DAY = `DELETE FROM stategrid_dws_dirty WHERE stat_date = $1::date`;
