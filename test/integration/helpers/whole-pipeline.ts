import assert from 'node:assert/strict';
import type { Client } from '@temporalio/client';
import type { AppConfig } from '../../../src/config';
import { resetEverything, startPipeline, waitCaughtUp, waitStreaming } from '../../../src/control/pipeline';
import { waitFor } from '../../../src/stack/proc';
import { createDailySchedules, SCHEDULE_ID, VERIFY_SCHEDULE_ID } from '../../../src/control/schedules';
import type { RecomputeResult } from '../../../src/workflows/contract';
import { previousLocalDay } from '../../../src/workflows/window-time';
import type { TestContext } from './pipeline';

/**
 * The whole life of a pipeline on a given Temporal server, as the deployment tests need it: a snapshot of
 * yesterday's rows, streamed inserts, updates and deletes, the day closed by the watermark, and a run of a
 * Temporal Schedule that recomputes that day; every layer is compared with the oracle. The pipeline is left
 * streaming for the caller's own checks.
 */
export async function runWholePipeline(t: TestContext, cfg: AppConfig, client: Client, pipelineId: string) {
  const day = previousLocalDay(Date.now(), cfg.timeZone);
  await resetEverything(cfg, client, pipelineId);
  await t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', 1 + g % 3, 'r' || (1 + g % 3), now()
    FROM generate_series(1, 30) g`);
  await t.q(
    `INSERT INTO power_consumption SELECT g, 1 + g % 40, 1.25, 0.50, $1::date + make_interval(secs => g * 30)
     FROM generate_series(1, 1000) g`,
    [day],
  );
  // The oracle's change log check: everything the pipeline streams is audited from a second slot.
  await t.startAudit(cfg.decodingPlugin);
  try {
    await startPipeline(cfg, client, { pipelineId, segmentSeconds: 5, batchDelayMs: 50 });
    await waitStreaming(cfg, pipelineId, 90000);
    await streamAndRecompute(t, cfg, client, pipelineId, day);
  } finally {
    await t.dropAudit();
  }
}

/** Streamed inserts, updates and deletes, the day closed by the watermark, then a scheduled recompute of it. */
async function streamAndRecompute(
  t: TestContext,
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
  day: string,
) {
  await t.q(
    `INSERT INTO power_consumption SELECT g, 1 + g % 40, 2.00, 1.00, $1::date + make_interval(secs => g * 20)
     FROM generate_series(1001, 3000) g`,
    [day],
  );
  await t.q(`UPDATE power_consumption SET consumption_amount = 3.50 WHERE consumption_id % 7 = 0`);
  await t.q(`DELETE FROM power_consumption WHERE consumption_id % 9 = 0`);
  // The next day's first event moves the watermark past midnight plus the allowed lateness: the day closes.
  await t.q(
    `INSERT INTO power_consumption VALUES (3001, 1, 1.00, 0.50, $1::date + interval '1 day 30 minutes')`,
    [day],
  );
  assert.ok(await waitCaughtUp(cfg, pipelineId, 120000), 'caught up');
  await waitFor(
    `day ${day} closed by the watermark`,
    async () =>
      (await t.q(`SELECT 1 FROM stategrid_window WHERE stat_date = $1 AND is_final`, [day])).length === 1,
    60000,
  );
  await t.assertConvergedWithSink(cfg.sinkUrl);
  const provisional = await t.q(
    `SELECT 1 FROM dws_region_daily_stats WHERE stat_date = $1 AND NOT is_final`,
    [day],
  );
  assert.equal(provisional.length, 0, 'every region of the closed day is final');

  const recompute = await scheduledRecompute(cfg, client, pipelineId);
  assert.equal(recompute.date, day);
  assert.equal(recompute.drift, 0);
  await t.assertConvergedWithSink(cfg.sinkUrl);
}

/** The product's daily schedules for this pipeline, the recompute one triggered now; returns its run's result. */
async function scheduledRecompute(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
): Promise<RecomputeResult> {
  for (const id of [SCHEDULE_ID, VERIFY_SCHEDULE_ID])
    await client.schedule
      .getHandle(id)
      .delete()
      .catch(() => undefined);
  await createDailySchedules(cfg, client, pipelineId, { cron: '0 1 * * *', verifyCron: '0 2 * * *' });
  const schedule = client.schedule.getHandle(SCHEDULE_ID);
  try {
    await schedule.trigger();
    let runId: string | undefined;
    await waitFor(
      'the triggered recompute',
      async () => {
        runId = (await schedule.describe()).info.recentActions[0]?.action.workflow.workflowId;
        return !!runId;
      },
      30000,
    );
    return (await client.workflow.getHandle(runId!).result()) as RecomputeResult;
  } finally {
    for (const id of [SCHEDULE_ID, VERIFY_SCHEDULE_ID]) await client.schedule.getHandle(id).delete();
  }
}
