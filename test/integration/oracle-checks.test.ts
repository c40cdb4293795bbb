import assert from 'node:assert/strict';
import { pipelineTestContext } from './helpers/pipeline';

/**
 * The checks themselves: on a pipeline the checks pass, each break imitates a faulty build (an update lost, a
 * delete logged twice, a closed day never finalised, an invalid row not dead-lettered) and the oracle or the WAL
 * audit must fail on it; each break is undone before the next, so it is the only fault when its check runs.
 */
describe('the oracle and the WAL audit catch a broken sink', function () {
  this.timeout(180000);
  const t = pipelineTestContext(undefined, { walAudit: true });
  const CLOSED = '2026-11-01';

  /** The snapshot's day, a later day streamed (the watermark closes the first), an update and a delete. */
  async function convergedPipeline(): Promise<void> {
    await t.twoDaysOfConsumptions([CLOSED, '2026-11-03']);
    await t.q(`UPDATE power_consumption SET consumption_amount = 9.99 WHERE consumption_id = 30001`);
    await t.q(`DELETE FROM power_consumption WHERE consumption_id = 30002`);
    await t.caughtUp();
    await t.assertConverged();
  }

  it('fails on a lost update and on a delete logged twice', async () => {
    await convergedPipeline();
    // As if the update never reached the sink: no log entry, ODS and DWD still at the inserted amount.
    const lost = await t.q<Record<string, string>>(
      `DELETE FROM ods_change_log WHERE table_name = 'power_consumption' AND op = 'U'
         AND row_data->>'consumption_id' = '30001'
       RETURNING commit_lsn::text, seq::text, row_data::text, old_key::text, commit_time::text`,
    );
    assert.equal(lost.length, 1, 'the update was logged once');
    await t.q(`UPDATE ods_power_consumption SET consumption_amount = 1.25 WHERE consumption_id = 30001`);
    await t.q(
      `UPDATE dwd_power_consumption_detail SET consumption_amount = 1.25 WHERE consumption_id = 30001`,
    );
    await assert.rejects(t.assertConverged(), /differs|audit|missing/i);
    await t.q(`UPDATE ods_power_consumption SET consumption_amount = 9.99 WHERE consumption_id = 30001`);
    await t.q(
      `UPDATE dwd_power_consumption_detail SET consumption_amount = 9.99 WHERE consumption_id = 30001`,
    );

    // Layers right again, the change log alone wrong: only the WAL audit can see it.
    const [update] = await t.q<{ n: number }>(
      `SELECT count(*)::int AS n FROM ods_change_log WHERE table_name = 'power_consumption' AND op = 'U'`,
    );
    assert.equal(update.n, 0);
    await assert.rejects(t.audit!.assertMatchesChangeLog());
    const [u] = lost;
    await t.q(
      `INSERT INTO ods_change_log (commit_lsn, seq, table_name, op, row_data, old_key, commit_time)
       VALUES ($1::pg_lsn, $2::int, 'power_consumption', 'U', $3::jsonb, $4::jsonb, $5::timestamptz)`,
      [u.commit_lsn, u.seq, u.row_data, u.old_key, u.commit_time],
    );
    await t.audit!.assertMatchesChangeLog();
    const twice = await t.q(
      `INSERT INTO ods_change_log (commit_lsn, seq, table_name, op, row_data, old_key, commit_time)
       SELECT commit_lsn, seq + 100000, table_name, op, row_data, old_key, commit_time FROM ods_change_log
       WHERE table_name = 'power_consumption' AND op = 'D'
         AND coalesce(old_key, row_data)->>'consumption_id' = '30002'
       RETURNING 1`,
    );
    assert.equal(twice.length, 1, 'the delete was logged once before');
    await assert.rejects(t.audit!.assertMatchesChangeLog());
  });

  it('fails on a closed day left provisional and on an invalid row missing from the dead letters', async () => {
    await convergedPipeline();
    // The watermark closes the first day when a segment ends: break it only once it is final.
    await t.waitFor('the first day final', async () => {
      const [day] = await t.q<{ done: boolean }>(
        `SELECT coalesce(bool_and(is_final), false) AS done FROM dws_region_daily_stats WHERE stat_date = $1`,
        [CLOSED],
      );
      return day.done;
    });
    const provisional = await t.q(
      `UPDATE dws_region_daily_stats SET is_final = false WHERE stat_date = $1 RETURNING 1`,
      [CLOSED],
    );
    assert.ok(provisional.length > 0, 'the closed day has stats');
    // Nothing is left to settle: a short wait for day closes is enough to tell the break from a close in flight.
    await assert.rejects(t.assertConverged({ settleMs: 3000 }), /final|differs/i);
    await t.q(`UPDATE dws_region_daily_stats SET is_final = true WHERE stat_date = $1`, [CLOSED]);
    await t.assertConverged();

    await t.q(`INSERT INTO power_consumption VALUES (40001, 3, -5.00, 0.5, '2026-11-03 10:00:00')`);
    await t.caughtUp();
    await t.assertConverged();
    const removed = await t.q(
      `DELETE FROM stategrid_dead_letter WHERE table_name = 'power_consumption' AND record_key = '40001' RETURNING 1`,
    );
    assert.ok(removed.length > 0, 'the negative amount was dead-lettered');
    await assert.rejects(t.assertConverged(), /dead/i);
  });
});
