import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import type { VerifyReport } from '../../src/verify/warehouse';
import { REPO_ROOT } from './setup/env';
import { PIPELINE_ID, pipelineTestContext } from './helpers/pipeline';

/** `stategrid verify` against a streaming pipeline: equal after catching up, then sink rows tampered with. */
describe('stategrid verify', function () {
  this.timeout(240000);
  const t = pipelineTestContext();

  const verify = (env: NodeJS.ProcessEnv = {}) => {
    const r = spawnSync(
      process.execPath,
      [path.join(REPO_ROOT, 'bin', 'stategrid.js'), 'verify', '--id', PIPELINE_ID, '--json'],
      { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180000 },
    );
    return {
      code: r.status,
      report: r.status === 2 ? null : (JSON.parse(r.stdout) as VerifyReport),
      err: r.stderr,
    };
  };
  const table = (r: VerifyReport, name: string) => r.tables.find((x) => x.table === name)!;

  it('reports equality, then each tampered key and partition, and exit 2 when it cannot compare', async () => {
    await t.twoDaysOfConsumptions(['2026-11-20', '2026-11-21']);
    await t.q(`UPDATE power_user SET user_name = '' WHERE user_id = 7`); // invalid: leaves DWD, details orphaned
    await t.caughtUp();

    // Both days are closed (by watermark or by their close instant, long past) before anything is tampered with:
    // a close recomputes its day from DWD, which would mend a tampered DWS row or absorb a tampered DWD one.
    await t.waitFor(
      'both days closed',
      async () =>
        (
          await t.q<{ n: number }>(
            `SELECT count(*)::int AS n FROM stategrid_window WHERE is_final AND stat_date IN ('2026-11-20', '2026-11-21')`,
          )
        )[0].n === 2,
      60000,
    );
    const equal = verify();
    assert.equal(equal.code, 0, equal.err);
    assert.ok(equal.report!.equal);
    assert.equal(table(equal.report!, 'ods_power_consumption').checked, 35000);
    assert.equal(table(equal.report!, 'dwd_power_user_info').checked, 199);

    await t.q(`DELETE FROM ods_power_consumption WHERE consumption_id = 12345`);
    await t.q(`UPDATE dwd_power_consumption_detail SET consumption_amount = 99 WHERE consumption_id = 34567`);
    await t.q(`INSERT INTO dwd_power_user_info VALUES (999999, 'ghost', 'x', 1, 'r1', now(), now())`);
    await t.q(`UPDATE dws_region_daily_stats SET total_cost = total_cost + 1
      WHERE stat_date = '2026-11-20' AND region_id = 2`);
    const differs = verify();
    assert.equal(differs.code, 1, differs.err);
    const r = differs.report!;
    assert.equal(r.equal, false);
    assert.deepEqual(table(r, 'ods_power_consumption').missing, ['12345']);
    assert.deepEqual(table(r, 'dwd_power_consumption_detail').different, ['34567']);
    assert.deepEqual(table(r, 'dwd_power_user_info').extra, ['999999']);
    // DWS is checked against DWD: the tampered total, and the partition of the tampered DWD amount (user 28,
    // region 1) in both DWS tables.
    assert.deepEqual(table(r, 'dws_region_daily_stats').different, ['2026-11-20/2', '2026-11-21/1']);
    assert.deepEqual(table(r, 'dws_user_ranking').different, ['2026-11-21/1']);
    assert.deepEqual(table(r, 'ods_power_user').counts, { missing: 0, extra: 0, different: 0 });
    assert.ok(r.rechecks >= 1, 'differences are re-checked after the pipeline caught up');

    const broken = verify({ STATEGRID_SINK_URL: t.cfg.sourceUrl.replace(/\/[^/?]*(\?|$)/, '/no_such_db$1') });
    assert.equal(broken.code, 2);
    assert.match(broken.err, /no_such_db/);
  });
});
