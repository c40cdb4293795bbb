import type pg from 'pg';

/**
 * Deterministic test data like the original example's insert script: the same seed, sizes and base date always
 * give the same rows. Values are derived in SQL from hashint8(id, seed), so a million rows insert in seconds.
 */
export type DataOptions = { users: number; records: number; days: number; seed: number; baseDate: string };

export const REGIONS = ['北京', '上海', '广州', '深圳', '杭州', '南京', '成都', '武汉'];
const USAGE = ['居民用电', '商业用电', '工业用电'];
const PRICE = ['0.56', '0.85', '1.05'];

const INSERT_USERS = `
INSERT INTO power_user (user_id, user_name, usage_type, region_id, region_name, update_time)
SELECT g, '用户' || lpad(g::text, 5, '0'),
  ($3::text[])[1 + abs(hashint8(g + $2::bigint)) % 3],
  1 + abs(hashint8(g * 7 + $2::bigint)) % $4::int,
  ($5::text[])[1 + abs(hashint8(g * 7 + $2::bigint)) % $4::int],
  now()
FROM generate_series(1, $1::bigint) AS g
ON CONFLICT (user_id) DO NOTHING`;

// Consumption ids continue after the current maximum, so repeated inserts add new rows.
const INSERT_CONSUMPTIONS = `
WITH base AS (SELECT COALESCE(max(consumption_id), 0) AS start FROM power_consumption),
rows AS (
  SELECT base.start + g AS id,
    1 + abs(hashint8(g * 31 + $3::bigint)) % $2::bigint AS user_id,
    (abs(hashint8(g * 17 + $3::bigint)) % 50000)::numeric / 100 AS amount,
    $5::date - ((abs(hashint8(g * 13 + $3::bigint)) % $4::int)::int) AS day,
    (abs(hashint8(g * 11 + $3::bigint)) % 86400000) AS ms
  FROM base, generate_series(1, $1::bigint) AS g)
INSERT INTO power_consumption (consumption_id, user_id, consumption_amount, consumption_cost, consumption_date)
SELECT r.id, r.user_id, r.amount,
  round(r.amount * (($6::numeric[])[1 + abs(hashint8(r.user_id + $7::bigint)) % 3]), 2),
  r.day + make_interval(secs => r.ms / 1000.0)
FROM rows r`;

export async function insertTestData(
  source: pg.ClientBase,
  opts: DataOptions,
): Promise<{ users: number; records: number }> {
  const regions = Math.min(REGIONS.length, Math.max(1, Math.ceil(opts.users / 4)));
  const u = await source.query(INSERT_USERS, [opts.users, opts.seed, USAGE, regions, REGIONS]);
  let records = 0;
  // Chunks keep each source transaction moderate, like an application writing continuously.
  const chunk = 50000;
  for (let done = 0; done < opts.records; done += chunk) {
    const n = Math.min(chunk, opts.records - done);
    const r = await source.query(INSERT_CONSUMPTIONS, [
      n,
      opts.users,
      opts.seed + done,
      opts.days,
      opts.baseDate,
      PRICE,
      opts.seed,
    ]);
    records += r.rowCount ?? 0;
  }
  return { users: u.rowCount ?? 0, records };
}
