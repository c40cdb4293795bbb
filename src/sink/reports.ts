import type pg from 'pg';

/**
 * Read-only report queries on the sink for operators (the `stategrid demo` tables and its wait for closed
 * windows). Every value is a parameter.
 */

/** Region stats of every day, oldest first. */
export const REGION_DAILY_STATS = `
SELECT stat_date::text, region_id, region_name, total_consumption, total_cost, user_count, max_consumption, is_final
FROM dws_region_daily_stats ORDER BY stat_date, region_id`;

/**
 * $1: how many ranks per region; the latest day with totals only. The day is read from the totals' key: taken
 * from the ranking view, it would rank every day to find the last one.
 */
export const TOP_USERS_LATEST_DAY = `
SELECT stat_date::text, region_name, ranking, user_id, user_name, total_consumption, total_cost, is_final
FROM dws_user_ranking
WHERE ranking <= $1 AND stat_date = (SELECT max(stat_date) FROM dws_user_day_total WHERE detail_rows > 0)
ORDER BY region_id, ranking`;

/** $1: how many detail rows, the highest consumption ids first. */
export const LATEST_DETAILS = `
SELECT consumption_id, user_id, user_name, consumption_amount, consumption_cost, consumption_date::text,
  region_name, usage_type
FROM dwd_power_consumption_detail ORDER BY consumption_id DESC LIMIT $1`;

/** Days whose window the pipeline has closed (is_final). */
export const CLOSED_WINDOW_COUNT = `SELECT count(*)::int AS n FROM stategrid_window WHERE is_final`;

export const regionDailyStats = (client: pg.ClientBase) => client.query(REGION_DAILY_STATS);

export const topUsersLatestDay = (client: pg.ClientBase, ranks: number) =>
  client.query(TOP_USERS_LATEST_DAY, [ranks]);

export const latestDetails = (client: pg.ClientBase, limit: number) => client.query(LATEST_DETAILS, [limit]);

export async function closedWindowCount(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ n: number }>(CLOSED_WINDOW_COUNT);
  return rows[0].n;
}
