import assert from 'node:assert/strict';
import { REGION_DAY_STATS_JSON } from './helpers/oracle';
import { pipelineTestContext } from './helpers/pipeline';

/**
 * CDC semantics against the real stack (PostgreSQL + Temporal dev server + worker process), for both decoding
 * plugins: after `wait`, ODS, DWD and DWS equal the semantics of docs/data-semantics.md computed directly on the source tables,
 * and the change log equals the WAL as a second slot reads it (helpers/wal-audit.ts).
 */
const USERS = `INSERT INTO power_user (user_id, user_name, usage_type, region_id, region_name, update_time) VALUES
  (1, '张三', '居民用电', 1, '北京', '2026-11-01 08:00:00'),
  (2, '李四', '商业用电', 1, '北京', '2026-11-01 08:00:00'),
  (3, '王五', '工业用电', 2, '上海', '2026-11-01 08:00:00')`;

for (const plugin of ['pgoutput', 'wal2json'] as const) {
  describe(`CDC pipeline with ${plugin}`, function () {
    this.timeout(180000);
    const t = pipelineTestContext(undefined, { walAudit: true });

    it('snapshots existing rows, then streams inserts, updates and deletes, each change logged once', async () => {
      await t.freshPipeline({ plugin }, async () => {
        await t.q(USERS);
        await t.q(`INSERT INTO power_consumption VALUES
          (1, 1, 10.50, 5.88, '2026-11-20 10:00:00'), (2, 2, 20.00, 17.00, '2026-11-20 11:00:00'),
          (90, 1, -3.00, 1.00, '2026-11-20 12:00:00'), (91, 99, 4.00, 1.00, '2026-11-20 12:30:00')`);
        await t.q(`INSERT INTO power_user VALUES (98, '\u3000', '居民用电', 1, '北京', now())`);
      });
      // The snapshot validates like the stream: the negative amount is a dead letter, the blank name too, and
      // the consumption of an unknown user lands in DWD without user columns.
      const dead = await t.q(`SELECT table_name, record_key, reason, raw_row->>'consumption_amount' AS amount
        FROM stategrid_dead_letter ORDER BY table_name, record_key`);
      assert.deepEqual(dead, [
        {
          table_name: 'power_consumption',
          record_key: '90',
          reason: 'consumption_amount is negative',
          amount: '-3.00',
        },
        { table_name: 'power_user', record_key: '98', reason: 'user_name is null or blank', amount: null },
      ]);
      await t.q(`INSERT INTO power_consumption VALUES (3, 3, 30.25, 31.76, '2026-11-20 12:00:00'),
        (4, 1, 1.00, 0.56, '2026-11-21 09:00:00')`);
      await t.q(`UPDATE power_consumption SET consumption_amount = 11.50 WHERE consumption_id = 1`);
      await t.q(`DELETE FROM power_consumption WHERE consumption_id = 2`);
      await t.q(`UPDATE power_consumption SET consumption_id = 40 WHERE consumption_id = 4`);
      await t.caughtUp();
      await t.assertConverged();
      const log = await t.q<{ op: string; n: string }>(
        `SELECT op, count(*) AS n FROM ods_change_log GROUP BY op ORDER BY op`,
      );
      assert.deepEqual(
        log.map((r) => [r.op, Number(r.n)]),
        [
          ['D', 1],
          ['I', 2],
          ['U', 2],
        ],
      );
      const moved = await t.q(`SELECT old_key FROM ods_change_log WHERE row_data->>'consumption_id' = '40'`);
      assert.deepEqual(moved[0].old_key, { consumption_id: '4' });
    });

    it('re-enriches details when a user arrives late, changes region or name, turns invalid or is deleted', async () => {
      await t.freshPipeline({ plugin });
      await t.q(`INSERT INTO power_consumption VALUES (1, 7, 5.00, 2.80, '2026-11-20 10:00:00'),
        (2, 7, 6.00, 3.36, '2026-11-21 10:00:00'), (3, 8, 7.00, 3.92, '2026-11-21 11:00:00')`);
      await t.caughtUp();
      await t.assertConverged();
      const orphans = await t.q(
        `SELECT count(*)::int AS n FROM dwd_power_consumption_detail WHERE region_id IS NULL`,
      );
      assert.equal(orphans[0].n, 3, 'consumptions of unknown users are kept as orphans');
      await t.q(`INSERT INTO power_user VALUES (7, '赵六', '居民用电', 3, '广州', '2026-11-01'),
        (8, '钱七', '居民用电', 3, '广州', '2026-11-01')`);
      await t.caughtUp();
      await t.assertConverged();
      await t.q(
        `UPDATE power_user SET region_id = 4, region_name = '深圳', user_name = '赵六六' WHERE user_id = 7`,
      );
      await t.caughtUp();
      await t.assertConverged();
      await t.q(`UPDATE power_user SET user_name = '  ' WHERE user_id = 8`);
      await t.caughtUp();
      await t.assertConverged();
      await t.q(`DELETE FROM power_user WHERE user_id = 7`);
      await t.caughtUp();
      await t.assertConverged();
      const rows = await t.q(
        `SELECT user_name, region_id FROM dwd_power_consumption_detail ORDER BY consumption_id`,
      );
      assert.deepEqual(rows, [
        { user_name: null, region_id: null },
        { user_name: null, region_id: null },
        { user_name: null, region_id: null },
      ]);
    });

    it('sends invalid rows to the dead-letter table and admits them to DWD once fixed', async () => {
      await t.freshPipeline({ plugin }, () => t.q(USERS).then(() => undefined));
      // wal2json 2.5 itself turns a NaN numeric into null, so NaN is only sent through pgoutput.
      const nanAmount = plugin === 'pgoutput' ? `'NaN'` : `-1.00`;
      await t.q(`INSERT INTO power_consumption VALUES (1, 1, -5.00, 1.00, '2026-11-20 10:00:00'),
        (2, NULL, 5.00, 1.00, '2026-11-20 10:00:00'), (3, 1, 5.00, NULL, '2026-11-20 10:00:00'),
        (4, 1, 5.00, 2.00, NULL), (5, 1, ${nanAmount}, 1.00, '2026-11-20 10:00:00'),
        (6, 1, 1.00, 1.00, '2026-11-20 10:00:00')`);
      await t.q(
        `INSERT INTO power_user VALUES (9, NULL, '居民用电', 1, '北京', now()), (10, 'x', 'y', NULL, '北京', now())`,
      );
      await t.caughtUp();
      await t.assertConverged();
      const dead = await t.q<{ table_name: string; record_key: string; reason: string }>(
        `SELECT table_name, record_key, reason FROM stategrid_dead_letter ORDER BY table_name, record_key`,
      );
      assert.equal(dead.length, 7);
      assert.ok(dead.some((d) => d.record_key === '1' && /negative/.test(d.reason)));
      assert.ok(dead.some((d) => d.record_key === '2' && /user_id is null/.test(d.reason)));
      assert.equal(
        (await t.q(`SELECT count(*)::int AS n FROM ods_power_consumption`))[0].n,
        6,
        'ODS keeps raw rows',
      );
      await t.q(`UPDATE power_consumption SET consumption_amount = 5.00 WHERE consumption_id = 1`);
      await t.caughtUp();
      await t.assertConverged();
      const fixed = await t.q(`SELECT 1 FROM dwd_power_consumption_detail WHERE consumption_id = 1`);
      assert.equal(fixed.length, 1);
    });

    it('moves a consumption to another day, ranks ties by user_id, and propagates TRUNCATE', async () => {
      await t.freshPipeline({ plugin }, () => t.q(USERS).then(() => undefined));
      await t.q(`INSERT INTO power_consumption VALUES (1, 1, 10.00, 5.60, '2026-11-20 10:00:00'),
        (2, 2, 10.00, 8.50, '2026-11-20 11:00:00'), (3, 1, 3.00, 1.68, '2026-11-21 10:00:00')`);
      await t.caughtUp();
      await t.assertConverged();
      const ties =
        await t.q(`SELECT user_id::int, ranking FROM dws_user_ranking WHERE stat_date = '2026-11-20'
        ORDER BY ranking`);
      assert.deepEqual(ties, [
        { user_id: 1, ranking: 1 },
        { user_id: 2, ranking: 2 },
      ]);
      await t.q(
        `UPDATE power_consumption SET consumption_date = '2026-11-21 12:00:00' WHERE consumption_id = 2`,
      );
      await t.caughtUp();
      await t.assertConverged();
      await t.q(`TRUNCATE power_consumption`);
      await t.caughtUp();
      await t.assertConverged();
      assert.equal((await t.q(`SELECT count(*)::int AS n FROM dws_region_daily_stats`))[0].n, 0);
      const truncs = await t.q(`SELECT count(*)::int AS n FROM ods_change_log WHERE op = 'T'`);
      assert.equal(truncs[0].n, 1);
    });

    it('sums 10,000 consumptions of 0.01 exactly and survives ADD COLUMN on a source table', async () => {
      await t.freshPipeline({ plugin }, () => t.q(USERS).then(() => undefined));
      await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 3, 0.01, 0.01, '2026-11-22 10:00:00'
        FROM generate_series(1, 10000) g`);
      await t.q(`ALTER TABLE power_consumption ADD COLUMN IF NOT EXISTS meter_no TEXT`);
      await t.q(`INSERT INTO power_consumption (consumption_id, user_id, consumption_amount, consumption_cost,
        consumption_date, meter_no) VALUES (10001, 1, 0.01, 0.01, '2026-11-22 11:00:00', 'M-1')`);
      await t.caughtUp();
      await t.assertConverged();
      const total = await t.q<{ s: string }>(
        `SELECT sum(total_consumption)::text AS s FROM dws_region_daily_stats`,
      );
      assert.equal(total[0].s, '100.01');
      const logged = await t.q(`SELECT row_data->>'meter_no' AS m FROM ods_change_log
        WHERE row_data->>'consumption_id' = '10001'`);
      assert.equal(logged[0].m, 'M-1', 'the change log keeps the new column');
      await t.q(`ALTER TABLE power_consumption DROP COLUMN meter_no`);
    });

    it('corrects a day closed long ago when a late event arrives, and records a revision', async () => {
      await t.freshPipeline({ plugin, segmentSeconds: 5 }, () => t.q(USERS).then(() => undefined));
      await t.q(`INSERT INTO power_consumption VALUES (1, 1, 10.00, 5.60, '2026-10-01 10:00:00'),
        (2, 2, 4.00, 3.40, '2026-11-23 10:00:00')`);
      await t.caughtUp();
      await t.waitFor(
        'day 2026-10-01 closed',
        async () =>
          (await t.q(`SELECT 1 FROM stategrid_window WHERE stat_date = '2026-10-01' AND is_final`)).length ===
          1,
      );
      const before = await t.q(`SELECT is_final FROM dws_region_daily_stats WHERE stat_date = '2026-10-01'`);
      assert.deepEqual(before, [{ is_final: true }]);
      // The oracle's view of the region before the late event, and what the revision log and window hold so far.
      const oracleBefore = await t.q<{ rows: string }>(`SELECT (${REGION_DAY_STATS_JSON})::text AS rows`, [
        '2026-10-01',
        1,
      ]);
      const revisionsBefore = (
        await t.q<{ id: string }>(`SELECT coalesce(max(id), 0) AS id FROM dws_revision`)
      )[0].id;
      const windowBefore = await t.q<{ late: number; revisions: number }>(
        `SELECT late_events::int AS late, revisions FROM stategrid_window WHERE stat_date = '2026-10-01'`,
      );
      await t.q(`INSERT INTO power_consumption VALUES (3, 1, 2.50, 1.40, '2026-10-01 23:00:00')`);
      await t.caughtUp();
      await t.assertConverged();
      const after = await t.q(`SELECT total_consumption::text AS t, is_final FROM dws_region_daily_stats
        WHERE stat_date = '2026-10-01'`);
      assert.deepEqual(after, [{ t: '12.50', is_final: true }]);
      assert.deepEqual(
        await t.q(
          `SELECT region_id, reason, before = $3::jsonb AS before_is_oracle_before,
            after = (${REGION_DAY_STATS_JSON}) AS after_is_oracle_after
          FROM dws_revision WHERE id > $4 ORDER BY id`,
          ['2026-10-01', 1, oracleBefore[0].rows, revisionsBefore],
        ),
        [{ region_id: 1, reason: 'late data', before_is_oracle_before: true, after_is_oracle_after: true }],
        'exactly one revision of the closed day, holding its region stats before and after the late event',
      );
      const window = await t.q<{ late: number; revisions: number }>(
        `SELECT late_events::int AS late, revisions FROM stategrid_window WHERE stat_date = '2026-10-01'`,
      );
      assert.deepEqual(window, [
        { late: windowBefore[0].late + 1, revisions: windowBefore[0].revisions + 1 },
      ]);
    });

    it('closes a day by its timer, a later day by the watermark, and keeps the newest day provisional', async () => {
      await t.freshPipeline({ plugin, segmentSeconds: 5 }, () => t.q(USERS).then(() => undefined));
      // Days relative to the local date in the pipeline's zone: three days ago (its timer is due), in two days
      // (only the watermark can close it) and in five (open: no timer due, the watermark stops before it).
      const day = (offset: number) =>
        `(now() AT TIME ZONE '${t.cfg.timeZone}')::date + ${offset} + time '10:00'`;
      const windows = () =>
        t.q(`SELECT stat_date - (now() AT TIME ZONE '${t.cfg.timeZone}')::date AS day, is_final, closed_by
          FROM stategrid_window ORDER BY stat_date`);
      await t.q(`INSERT INTO power_consumption VALUES (1, 1, 10.00, 5.60, ${day(-3)})`);
      await t.caughtUp();
      await t.assertConverged();
      assert.deepEqual(await windows(), [{ day: -3, is_final: true, closed_by: 'timer' }]);
      await t.q(`INSERT INTO power_consumption VALUES (2, 2, 4.00, 3.40, ${day(2)}), (3, 3, 7.00, 2.00, ${day(5)}),
        (4, 1, 1.00, 1.00, ${day(5)})`);
      await t.caughtUp();
      await t.assertConverged();
      assert.deepEqual(await windows(), [
        { day: -3, is_final: true, closed_by: 'timer' },
        { day: 2, is_final: true, closed_by: 'watermark' },
      ]);
      const rows = await t.q(`SELECT stat_date - (now() AT TIME ZONE '${t.cfg.timeZone}')::date AS day,
          bool_and(is_final) AS all_final, bool_or(is_final) AS any_final, count(*)::int AS n
        FROM (SELECT stat_date, is_final FROM dws_region_daily_stats
          UNION ALL SELECT stat_date, is_final FROM dws_user_ranking) r GROUP BY 1 ORDER BY 1`);
      assert.deepEqual(rows, [
        { day: -3, all_final: true, any_final: true, n: 2 },
        { day: 2, all_final: true, any_final: true, n: 2 },
        { day: 5, all_final: false, any_final: false, n: 4 },
      ]);
    });
  });
}
