import assert from 'node:assert/strict';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { tsToMs } from '@temporalio/common/lib/time';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import {
  pauseUpdate,
  resumeUpdate,
  statusQuery,
  stopUpdate,
  WorkflowType,
  type PipelineConfig,
  type PipelineState,
} from '../../src/workflows/contract';
import {
  countEvents,
  eventually,
  FakePipelineActivities,
  pipelineConfig,
  recordFixture,
  startTestServer,
  withWorker,
  type SegmentScript,
} from './harness';

/** cdcPipelineWorkflow on the time-skipping test server: timers, pause/resume/stop updates, failure, continue-as-new. */
describe('cdcPipelineWorkflow (time-skipping, scripted activities)', function () {
  let env: TestWorkflowEnvironment;
  before(async () => {
    env = await startTestServer();
  });
  after(async () => {
    await env?.teardown();
  });

  let runs = 0;
  /** Starts a pipeline with its own workflow id and a worker running the scripted activities around `fn`. */
  async function withPipeline(
    config: PipelineConfig,
    segment: (n: number) => SegmentScript,
    fn: (
      handle: Awaited<ReturnType<TestWorkflowEnvironment['client']['workflow']['start']>>,
      fakes: FakePipelineActivities,
    ) => Promise<void>,
    script?: (fakes: FakePipelineActivities) => void,
  ) {
    const fakes = new FakePipelineActivities(config, segment);
    script?.(fakes);
    // A task queue per pipeline: a worker left over from a failed test never serves the next one.
    const taskQueue = `workflow-tier-${++runs}`;
    await withWorker(env, taskQueue, fakes, async () => {
      const handle = await env.client.workflow.start(WorkflowType.pipeline, {
        taskQueue,
        workflowId: `pipeline-${runs}`,
        args: [{}],
      });
      await fn(handle, fakes);
    });
  }

  it('closes a day by its durable timer only once the close instant passed, with one timer for it', async () => {
    // A day whose close instant (next UTC midnight, no grace) is at least a minute ahead of the server clock.
    const day = new Date((await env.currentTimeMs()) + 60_000).toISOString().slice(0, 10);
    const closeAt = Date.parse(`${day}T00:00:00Z`) + 86_400_000;
    const config = pipelineConfig({ timeZone: 'UTC', closeGraceMinutes: 0 });
    await withPipeline(
      config,
      // Segment 5 runs until the pause, segment 10 until the stop; the others take 50 ms.
      (n) => ({ days: n === 1 ? [day] : [], ms: n === 5 || n >= 10 ? 'until-cancelled' : 50 }),
      async (handle, fakes) => {
        await eventually('four segments and a fifth running', () => fakes.capturesStarted >= 5);
        assert.equal(fakes.closes.length, 0, 'the day stays open before its close instant');
        // Paused, nothing runs, so the server can skip time: to 1.5 s before the close instant.
        await handle.executeUpdate(pauseUpdate);
        await env.sleep(closeAt - (await env.currentTimeMs()) - 1500);
        assert.equal(fakes.closes.length, 0, 'not closed while time was skipped to just before the instant');
        await handle.executeUpdate(resumeUpdate);
        await eventually('the timer close', () => fakes.closes.length > 0);
        assert.equal(fakes.closes.length, 1);
        assert.equal(fakes.closes[0].date, day);
        assert.equal(fakes.closes[0].closedBy, 'timer');
        assert.ok(fakes.closes[0].scheduledAtMs >= closeAt, 'the close ran after the close instant');
        await eventually('segments after the resume', () => fakes.capturesStarted >= 10);
        const state = await handle.executeUpdate(stopUpdate, { args: [{}] });
        assert.deepEqual(state.closedDays, [{ date: day, by: 'timer' }]);
        assert.deepEqual(state.openDays, []);
        const history = await handle.fetchHistory();
        // STATEGRID_RECORD_HISTORY=1 records this run (timer, updates, day close) as a replay fixture.
        if (process.env.STATEGRID_RECORD_HISTORY)
          recordFixture('cdcPipelineWorkflow.one-close-timer', history);
        const { events } = history;
        const captures = countEvents(
          events,
          (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'captureChanges',
        );
        assert.ok(captures >= 8, `ran ${captures} capture segments`);
        assert.equal(
          countEvents(events, (e) => e.timerStartedEventAttributes),
          1,
          'one timer in the run',
        );
        assert.equal(
          countEvents(events, (e) => e.timerCanceledEventAttributes),
          0,
        );
      },
    );
  });

  it('pauses, resumes and stops through updates that return once they took effect', async () => {
    await withPipeline(
      pipelineConfig(),
      (n) => ({ ms: n <= 2 ? 50 : 'until-cancelled' }),
      async (handle, fakes) => {
        await eventually('two segments and a third running', () => fakes.capturesStarted >= 3);
        const paused = await handle.executeUpdate(pauseUpdate);
        assert.equal(paused.phase, 'paused');
        assert.equal((await handle.query(statusQuery)).phase, 'paused');
        const startedWhilePaused = fakes.capturesStarted;
        await env.sleep('2 hours');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(fakes.capturesStarted, startedWhilePaused, 'no capture segment runs while paused');

        const resumed = await handle.executeUpdate(resumeUpdate);
        assert.equal(resumed.phase, 'streaming');
        await eventually('a segment after resume', () => fakes.capturesStarted > startedWhilePaused);

        // The signals of the same names still work (recorded histories, `temporal workflow signal`).
        await handle.signal('pause');
        await eventually(
          'paused by signal',
          async () => (await handle.query(statusQuery)).phase === 'paused',
        );
        await handle.signal('resume');
        await eventually(
          'resumed by signal',
          async () => (await handle.query(statusQuery)).phase === 'streaming',
        );

        await eventually('a segment after the signal', () => fakes.capturesStarted >= 5);
        const stopped = await handle.executeUpdate(stopUpdate, { args: [{ dropSlot: true }] });
        assert.equal(stopped.phase, 'stopped');
        assert.equal(fakes.slotDrops, 1, 'the slot was dropped as asked');
        const result = (await handle.result()) as PipelineState;
        assert.equal(result.phase, 'stopped');
        assert.equal(result.totals.segments, 2, 'the cancelled segments applied nothing');
        assert.equal(fakes.capturesCompleted, 2);
      },
    );
  });

  it('rejects pause and resume while stopping, and a malformed stop request', async () => {
    // The segment takes a second to let go after the stop, which leaves time to try the updates meanwhile.
    await withPipeline(
      pipelineConfig(),
      () => ({ ms: 'until-cancelled', flushMs: 1000 }),
      async (handle, fakes) => {
        await eventually('a running segment', () => fakes.capturesStarted >= 1);
        await assert.rejects(
          handle.executeUpdate(stopUpdate, { args: [{ dropSlot: 'yes' } as never] }),
          WorkflowUpdateFailedError,
        );
        await handle.signal('stop');
        for (const update of [pauseUpdate, resumeUpdate]) {
          await assert.rejects(handle.executeUpdate(update), (err: unknown) => {
            assert.ok(err instanceof WorkflowUpdateFailedError);
            assert.match(String(err.cause?.message), /stopping/);
            return true;
          });
        }
        const result = (await handle.result()) as PipelineState;
        assert.equal(result.phase, 'stopped');
        assert.equal(fakes.slotDrops, 0);
      },
    );
  });

  it('answers a pause that a resume overtook before the segment let go, and streams on', async () => {
    await withPipeline(
      pipelineConfig(),
      () => ({ ms: 'until-cancelled', flushMs: 1000 }),
      async (handle, fakes) => {
        await eventually('a running segment', () => fakes.capturesStarted >= 1);
        const pausing = handle.executeUpdate(pauseUpdate);
        await eventually('phase pausing', async () => (await handle.query(statusQuery)).phase === 'pausing');
        const resumed = await handle.executeUpdate(resumeUpdate);
        assert.equal(resumed.phase, 'streaming');
        assert.notEqual((await pausing).phase, 'paused', 'the pause returned without taking effect');
        await eventually('the next segment', () => fakes.capturesStarted >= 2);
        assert.equal((await handle.query(statusQuery)).phase, 'streaming');
        await handle.executeUpdate(stopUpdate, { args: [{}] });
      },
    );
  });

  it('retries a day close lost with its worker and streams on (the segments wait for the close)', async () => {
    const day = '2020-01-01'; // its close instant has long passed: closed beside the next segment
    await withPipeline(
      pipelineConfig(),
      (n) => ({ days: n === 1 ? [day] : [], ms: n >= 4 ? 'until-cancelled' : 50 }),
      async (handle, fakes) => {
        await eventually('segments after the lost close', () => fakes.capturesStarted >= 4, 15000);
        assert.deepEqual(
          fakes.closes.map((c) => [c.date, c.attempt]),
          [
            [day, 1],
            [day, 2],
          ],
          'the lost attempt, then its retry',
        );
        const state = await handle.executeUpdate(stopUpdate, { args: [{}] });
        assert.deepEqual(state.closedDays, [{ date: day, by: 'timer' }]);
        assert.deepEqual(state.openDays, []);
      },
      (fakes) => fakes.closesLostOnce.add(day),
    );
  });

  it('fails on a non-retryable capture error, reports it, and captures again on resume', async () => {
    const slotGone = ApplicationFailure.nonRetryable(
      'replication slot "stategrid_wf" does not exist',
      'SlotMissing',
    );
    await withPipeline(
      pipelineConfig(),
      (n) => (n === 1 ? { fail: slotGone } : { ms: n === 2 ? 50 : 'until-cancelled' }),
      async (handle, fakes) => {
        await eventually('phase failed', async () => (await handle.query(statusQuery)).phase === 'failed');
        const failed = await handle.query(statusQuery);
        assert.match(String(failed.error), /does not exist/);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(fakes.capturesStarted, 1, 'a non-retryable error is not retried');

        const resumed = await handle.executeUpdate(resumeUpdate);
        assert.equal(resumed.phase, 'streaming');
        assert.equal(resumed.error, null);
        await eventually('a segment after resume', () => fakes.capturesStarted >= 3);
        const stopped = await handle.executeUpdate(stopUpdate, { args: [{}] });
        assert.equal(stopped.phase, 'stopped');
        assert.equal(stopped.totals.segments, 1);
      },
    );
  });

  it('fills unfilled ODS columns once, by a verify with repair of the ODS layer beside it, until none are left', async () => {
    await withPipeline(
      pipelineConfig(),
      (n) => ({ unfilledColumns: n <= 3 ? 2 : 0, ms: n < 6 ? 20 : 'until-cancelled' }),
      async (handle, fakes) => {
        await eventually('five segments', () => fakes.capturesCompleted >= 5);
        await eventually('the fill ran', () => fakes.verifies.length > 0);
        assert.deepEqual(fakes.verifies, [{ pipelineId: 'wf', layer: 'ods', repair: true }]);
        const state = await handle.query(statusQuery);
        assert.equal(state.columnFill, undefined, 'forgotten once a segment finds no column left to fill');
        const history = await handle.fetchHistory();
        // STATEGRID_RECORD_HISTORY=1 records this run (a fill started beside the segments) as a replay fixture.
        if (process.env.STATEGRID_RECORD_HISTORY) recordFixture('cdcPipelineWorkflow.fill-columns', history);
        const started =
          history.events?.filter((e) => e.startChildWorkflowExecutionInitiatedEventAttributes) ?? [];
        assert.equal(started.length, 1, 'one fill for the three segments that found columns to fill');
        const child = started[0].startChildWorkflowExecutionInitiatedEventAttributes!;
        assert.equal(child.workflowType?.name, WorkflowType.verify);
        assert.match(child.workflowId ?? '', /^stategrid-fill-columns-wf-/);
        await handle.executeUpdate(stopUpdate, { args: [{}] });
      },
    );
  });

  it('continues as new when the history passes maxHistoryEvents, carrying its totals and its task timeout', async () => {
    await withPipeline(
      pipelineConfig({ maxHistoryEvents: 30, workflowTaskTimeoutMs: 3000 }),
      (n) => ({ applied: 2, ms: n < 12 ? 20 : 'until-cancelled' }),
      async (handle, fakes) => {
        const first = await handle.describe();
        const taskTimeoutMs = (d: typeof first) => tsToMs(d.raw.executionConfig?.defaultWorkflowTaskTimeout);
        // Started without one, like `temporal workflow start` without --task-timeout: the server's default.
        assert.equal(taskTimeoutMs(first), 10_000);
        await eventually('a continued run', async () => (await handle.describe()).runId !== first.runId);
        assert.equal(
          taskTimeoutMs(await handle.describe()),
          3000,
          "the continued run has the input's timeout",
        );
        await eventually('eleven segments and a twelfth running', () => fakes.capturesStarted >= 12);
        // Paused, the state holds still (no continue-as-new while a pause is in flight).
        const state = await handle.executeUpdate(pauseUpdate);
        assert.ok(state.continuedRuns >= 1);
        assert.equal(taskTimeoutMs(await handle.describe()), 3000, 'so has every run after it');
        assert.equal(
          state.totals.segments,
          fakes.capturesCompleted,
          'every segment of every run counted once',
        );
        assert.equal(state.totals.applied, 2 * fakes.capturesCompleted);
        const perWorker = state.totals.perWorker ?? {};
        assert.deepEqual(Object.keys(perWorker).sort(), ['fake-a', 'fake-b']);
        assert.equal(
          Object.values(perWorker).reduce((n, w) => n + w.applied, 0),
          state.totals.applied,
          'per-worker totals add up across runs',
        );
        assert.equal(
          Object.values(perWorker).reduce((n, w) => n + w.segments, 0),
          state.totals.segments,
        );
        const { events } = await handle.fetchHistory();
        const inThisRun = countEvents(events, (e) => e.activityTaskCompletedEventAttributes);
        assert.ok(inThisRun < state.totals.segments, 'totals include segments of earlier runs');
        await handle.executeUpdate(stopUpdate, { args: [{}] });
      },
    );
  });
});
