import assert from 'node:assert/strict';
import { resetEverything } from '../../src/control/pipeline';
import { CLOSED_WINDOW_COUNT } from '../../src/sink/reports';
import { oracleLayers } from './helpers/oracle';
import { pipelineTestContext, runStategrid } from './helpers/pipeline';

/**
 * The README's quick start, `stategrid demo`, on the test stack: the command a new user runs first, end to end
 * through the CLI (stack up, db init, pipeline start, data, wait), its tables printed and every layer equal to
 * what the semantics compute on the source.
 */
describe('demo', function () {
  this.timeout(240000);
  const DEMO_PIPELINE = 'default'; // the pipeline the demo starts
  // Its pipeline and slot go afterwards: a later test's data must not stream into it.
  const t = pipelineTestContext((t) => resetEverything(t.cfg, t.client, DEMO_PIPELINE));
  const rowsOf = async (query: string) =>
    (await t.q<{ r: string }>(`SELECT (x.*)::text AS r FROM (${query}) x ORDER BY 1`)).map((r) => r.r);

  it('runs the original example end to end and prints its tables, every layer equal to the source', async () => {
    await resetEverything(t.cfg, t.client, DEMO_PIPELINE);
    const run = runStategrid(['demo', '--users', '12', '--records', '300', '--days', '3'], 200000);
    assert.equal(run.status, 0, `stategrid demo failed:\n${run.stdout}${run.stderr}`);
    for (const table of ['dws_region_daily_stats', 'dws_user_ranking', 'dwd_power_consumption_detail'])
      assert.match(run.stdout, new RegExp(`== ${table}`), `the demo prints ${table}`);

    const [source] = await t.q<{ users: number; records: number; days: number }>(
      `SELECT (SELECT count(*) FROM power_user)::int AS users,
         (SELECT count(*) FROM power_consumption)::int AS records,
         (SELECT count(DISTINCT consumption_date::date) FROM power_consumption)::int AS days`,
    );
    assert.deepEqual(
      source,
      { users: 12, records: 300, days: 3 },
      'the demo wrote the data it was asked for',
    );
    for (const layer of oracleLayers(null))
      assert.deepEqual(
        await rowsOf(layer.actual),
        await rowsOf(layer.expected),
        `${layer.name} differs from source`,
      );
    // The demo waits for the watermark to close the days before the last one (is_final), then prints.
    const [closed] = await t.q<{ n: number }>(CLOSED_WINDOW_COUNT);
    assert.equal(closed.n, 2, 'the two days before the last are closed');
  });
});
