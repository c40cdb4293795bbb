import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { metricValue, scrapeMetrics } from './helpers/metrics';
import { pipelineTestContext } from './helpers/pipeline';

/** The worker's Prometheus endpoint and structured JSON logs, read from the running worker process. */
describe('worker metrics and logs', function () {
  this.timeout(120000);
  const t = pipelineTestContext();

  it('counts applied rows and dead letters on /metrics and logs JSON lines without passwords', async () => {
    const scrape = () => scrapeMetrics(t.cfg);
    const applied = 'stategrid_rows_applied_total{pipeline="test",table="power_consumption"}';
    const dead = 'stategrid_dead_letters_total{pipeline="test"}';
    const before = await scrape();
    await t.freshPipeline({ segmentSeconds: 5 }, async () => {
      await t.q(`INSERT INTO power_user VALUES (1, 'a', '居民用电', 1, '北京', now())`);
    });
    await t.q(`INSERT INTO power_consumption SELECT g, 1, 1.00, 0.56, '2026-11-20 10:00:00'
      FROM generate_series(1, 250) g`);
    await t.q(`INSERT INTO power_consumption VALUES (251, 1, -1.00, 0.56, '2026-11-20 10:00:00')`);
    await t.caughtUp();
    const after = await scrape();
    assert.equal(metricValue(after, applied) - metricValue(before, applied), 251);
    assert.equal(metricValue(after, dead) - metricValue(before, dead), 1);
    assert.match(after, /stategrid_batch_seconds_bucket/);
    // The streaming pipeline's capture segment is running on this worker right now.
    assert.equal(metricValue(after, 'stategrid_activities_running{activity="captureChanges"}'), 1);

    // When a capture segment ends (every 5 s here), the slot's decoding figures as PostgreSQL counts them.
    await t.waitFor(
      'the slot figures of an ended segment',
      async () => metricValue(await scrape(), 'stategrid_slot_decoded_bytes{pipeline="test"}') > 0,
      30000,
    );
    assert.match(await scrape(), /^stategrid_slot_spilled_bytes\{pipeline="test"/m);

    // A change to a day whose window is closed is corrected and counted as a late event.
    const late = 'stategrid_late_events_total{pipeline="test"}';
    await t.waitFor('2026-11-20 closed', async () => {
      const w = await t.q(`SELECT 1 FROM stategrid_window WHERE stat_date = '2026-11-20' AND is_final`);
      return w.length === 1;
    });
    await t.q(`INSERT INTO power_consumption VALUES (252, 1, 2.00, 1.12, '2026-11-20 11:00:00')`);
    await t.caughtUp();
    const window = await t.q<{ n: number }>(
      `SELECT late_events::int AS n FROM stategrid_window WHERE stat_date = '2026-11-20'`,
    );
    assert.ok(window[0].n >= 1);
    assert.equal(metricValue(await scrape(), late) - metricValue(after, late), window[0].n);

    const log = fs.readFileSync(path.join(t.cfg.home, 'logs', 'worker.log'), 'utf8');
    const json = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(json.some((e) => e.msg === 'worker polling' && typeof e.sink === 'string'));
    assert.ok(!log.includes(':postgres@'), 'connection passwords are masked in logs');
  });
});
