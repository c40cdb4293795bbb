import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { resetEverything } from '../../src/control/pipeline';
import { resolveTemporalCli } from '../../src/stack/temporal';
import { PIPELINE_ID, pipelineTestContext, runStategrid } from './helpers/pipeline';
import { REPO_ROOT } from './setup/env';

/**
 * What an operator does without our CLI: the `temporal` binary against the real server (start, query, signal,
 * list by search attribute, malformed inputs) and the Temporal Web UI in a headless browser.
 */
describe('operator tools: temporal CLI and Web UI', function () {
  this.timeout(240000);
  const t = pipelineTestContext();
  const workflowId = `stategrid-pipeline-${PIPELINE_ID}`;
  const recomputeId = 'stategrid-recompute-test-cli';
  let temporalBin = '';

  /** Runs the real `temporal` CLI against the test server; returns exit code and output. */
  const temporal = (...args: string[]) => {
    const res = spawnSync(
      temporalBin,
      [...args, '--address', t.cfg.temporalAddress, '--namespace', t.cfg.temporalNamespace],
      { encoding: 'utf8', timeout: 60000 },
    );
    return { code: res.status, out: `${res.stdout}${res.stderr}` };
  };
  const ok = (...args: string[]) => {
    const r = temporal(...args);
    assert.equal(r.code, 0, `temporal ${args.join(' ')} failed:\n${r.out}`);
    return r.out;
  };
  const queryStatus = () => {
    const out = ok('workflow', 'query', '--workflow-id', workflowId, '--name', 'status', '--output', 'json');
    const parsed = JSON.parse(out) as { queryResult: [{ phase: string; totals: { applied: number } }] };
    return parsed.queryResult[0];
  };

  before(async () => {
    temporalBin = await resolveTemporalCli(t.cfg, () => undefined);
  });

  it('starts the pipeline with `temporal workflow start`, queries status, pauses and resumes by signal and by update', async () => {
    await resetEverything(t.cfg, t.client, PIPELINE_ID);
    await t.q(`INSERT INTO power_user VALUES (1, '张三', '居民用电', 1, '北京', now()),
      (2, 'b', '商业用电', 2, '上海', now())`);
    ok(
      'workflow',
      'start',
      '--type',
      'cdcPipelineWorkflow',
      '--task-queue',
      t.cfg.taskQueue,
      '--workflow-id',
      workflowId,
      '--input',
      JSON.stringify({ pipelineId: PIPELINE_ID, segmentSeconds: 5 }),
    );
    await t.waitFor('streaming per status query', async () => queryStatus().phase === 'streaming');

    ok('workflow', 'signal', '--workflow-id', workflowId, '--name', 'pause');
    await t.waitFor('paused per status query', async () => queryStatus().phase === 'paused');
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 2, 1.25, 0.70, '2026-11-20 08:00:00'
      FROM generate_series(1, 500) g`);
    await new Promise((r) => setTimeout(r, 2000));
    const whilePaused = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM ods_power_consumption`);
    assert.equal(whilePaused[0].n, 0, 'nothing is applied while paused');

    ok('workflow', 'signal', '--workflow-id', workflowId, '--name', 'resume');
    await t.caughtUp();
    await t.assertConverged();
    await t.waitFor('status query counts the 500 changes', async () => queryStatus().totals.applied >= 500);

    // The updates return once they took effect: the result of `pause` is already the paused state.
    const updated = (name: string) => {
      const out = ok(
        'workflow',
        'update',
        'execute',
        '--workflow-id',
        workflowId,
        '--name',
        name,
        '-o',
        'json',
      );
      return (JSON.parse(out) as { result: { phase: string } }).result.phase;
    };
    assert.equal(updated('pause'), 'paused');
    assert.equal(queryStatus().phase, 'paused');
    assert.equal(updated('resume'), 'streaming');

    // The search attribute lets operators filter runs per pipeline.
    const listed = ok(
      'workflow',
      'list',
      '--query',
      `StategridPipelineId = '${PIPELINE_ID}' AND ExecutionStatus = 'Running'`,
      '--output',
      'json',
    );
    assert.match(listed, new RegExp(workflowId));

    // A recompute through the CLI, waiting for its result.
    const result = ok(
      'workflow',
      'execute',
      '--type',
      'dailyRecomputeWorkflow',
      '--task-queue',
      t.cfg.taskQueue,
      '--workflow-id',
      recomputeId,
      '--input',
      JSON.stringify({ date: '2026-11-20', pipelineId: PIPELINE_ID }),
      '--output',
      'json',
    );
    assert.match(result, /"drift":\s*0/);
    assert.match(result, /"date":\s*"2026-11-20"/);
  });

  it('fails malformed inputs given to `temporal workflow start` with a message naming the field', async () => {
    const cases: [string, string, RegExp][] = [
      ['cdcPipelineWorkflow', '{"pipelineId":"x; DROP TABLE power_user"}', /pipelineId/],
      ['cdcPipelineWorkflow', '{"pipelineId":"cli_bad","batchRows":-5}', /batchRows/],
      ['cdcPipelineWorkflow', '{"pipelineId":"cli_bad","slotName":"s\\"; DROP"}', /slotName/],
      ['cdcPipelineWorkflow', '{"pipelineId":"cli_bad","unknownSetting":1}', /unknownSetting/],
      ['dailyRecomputeWorkflow', '{"date":"2026-02-30"}', /date/],
      ['dailyRecomputeWorkflow', '["not", "an", "object"]', /expected object/i],
    ];
    for (const [i, [type, input, field]] of cases.entries()) {
      const id = `stategrid-bad-input-${i}-${Date.now()}`;
      const r = temporal(
        'workflow',
        'execute',
        '--type',
        type,
        '--task-queue',
        t.cfg.taskQueue,
        '--workflow-id',
        id,
        '--input',
        input,
      );
      assert.notEqual(r.code, 0, `${input} should fail`);
      assert.match(r.out, field, `${input}: error should name the field:\n${r.out}`);
      const desc = ok('workflow', 'describe', '--workflow-id', id, '--output', 'json');
      assert.match(desc, /WORKFLOW_EXECUTION_STATUS_FAILED/, `${input}: the run fails instead of retrying`);
    }
    const tables = await t.q(`SELECT 1 FROM pg_tables WHERE tablename = 'power_user'`);
    assert.equal(tables.length, 1, 'injection attempts did nothing');
    const slots = await t.q(`SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '%cli_bad%'`);
    assert.equal(slots.length, 0, 'no slot is created for a rejected input');
  });

  it('`stategrid pipeline start` reports snapshot progress as plain lines; `stop --drop-slot` frees the slot', async () => {
    await resetEverything(t.cfg, t.client, PIPELINE_ID);
    await t.q(`INSERT INTO power_user SELECT g, 'u' || g, '居民用电', g % 5, 'r' || (g % 5), now()
      FROM generate_series(1, 2000) g`);
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 2000, 1.5, 0.8, '2026-11-21 09:00:00'
      FROM generate_series(1, 60000) g`);
    const stategrid = (...args: string[]) => runStategrid(args);
    const started = stategrid(
      'pipeline',
      'start',
      '--id',
      PIPELINE_ID,
      '--input',
      '{"snapshotChunkRows":5000}',
    );
    assert.equal(started.status, 0, started.stderr);
    assert.match(started.stdout, /snapshot 62000\/62000 rows \(streaming\)/);
    assert.match(started.stdout, /pipeline test is streaming/);
    await t.caughtUp();
    await t.assertConverged();

    const stopped = stategrid('pipeline', 'stop', '--id', PIPELINE_ID, '--drop-slot');
    assert.equal(stopped.status, 0, stopped.stderr);
    const slot = await t.q(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'stategrid_test'`);
    assert.equal(slot.length, 0);

    // A slot left by a pipeline whose workflow is gone still gets dropped.
    await t.q(`SELECT pg_create_logical_replication_slot('stategrid_ghost', 'pgoutput')`);
    const ghost = stategrid('pipeline', 'stop', '--id', 'ghost', '--drop-slot');
    assert.equal(ghost.status, 0, ghost.stderr);
    assert.match(ghost.stdout, /not running; dropped slot stategrid_ghost/);
    const left = await t.q(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'stategrid_ghost'`);
    assert.equal(left.length, 0);
  });

  it('lists the pipeline and the recompute run in the Temporal Web UI (headless chromium)', async () => {
    const outDir = path.join(REPO_ROOT, 'test-output');
    fs.mkdirSync(outDir, { recursive: true });
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      headless: true,
      // Root in CI containers cannot use the sandbox; nothing here browses untrusted pages.
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
      const ui = `http://127.0.0.1:${t.cfg.temporalUiPort}/namespaces/${t.cfg.temporalNamespace}`;
      await page.goto(`${ui}/workflows`);
      await page.getByText(workflowId, { exact: true }).first().waitFor({ timeout: 60000 });
      await page.getByText(recomputeId, { exact: true }).first().waitFor({ timeout: 30000 });
      await page.screenshot({ path: path.join(outDir, 'webui-workflows.png'), fullPage: true });

      // The pipeline's history: each activity carries a summary saying what it does.
      const runs = await t.client.workflow.getHandle(workflowId).describe();
      await page.goto(`${ui}/workflows/${workflowId}/${runs.runId}/history`);
      try {
        for (const summary of [
          /hold the exported snapshot of slot/,
          /snapshot chunk 1\/\d+/,
          /capture ≤\d+s from/,
        ])
          await page.getByText(summary).first().waitFor({ timeout: 30000 });
      } finally {
        await page.screenshot({ path: path.join(outDir, 'webui-pipeline.png'), fullPage: true });
      }
    } finally {
      await browser.close();
    }
    assert.ok(fs.statSync(path.join(outDir, 'webui-workflows.png')).size > 10000, 'screenshot saved');
  });
});
