import fs from 'node:fs';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ApplicationFailure } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { WORKFLOW_BUNDLE } from '../../src/build/bundle-workflows';
import { SEARCH_ATTRIBUTES } from '../../src/temporal/search-attributes';
import { requireTestServer } from '../../src/stack/test-server';
import type {
  CaptureSegmentResult,
  PipelineActivities as Activities,
  PipelineConfig,
  VerifyInput,
} from '../../src/workflows/contract';

/**
 * The workflow tier: the real workflow code (the bundle `npm run build` writes) on the Java time-skipping test
 * server, with scripted activities instead of PostgreSQL.
 */

// Worker start/stop lines for every test drown the results; warnings and errors still show.
Runtime.install({ logger: new DefaultLogger('WARN') });

/** Starts the test server and registers the search attributes the workflows set (as `stack up` does). */
export async function startTestServer(): Promise<TestWorkflowEnvironment> {
  const env = await TestWorkflowEnvironment.createTimeSkipping({
    server: { executable: { type: 'existing-path', path: requireTestServer() } },
  });
  const { INDEXED_VALUE_TYPE_KEYWORD: KEYWORD } = temporal.api.enums.v1.IndexedValueType;
  const searchAttributes = Object.fromEntries(Object.keys(SEARCH_ATTRIBUTES).map((name) => [name, KEYWORD]));
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes,
  });
  return env;
}

export function pipelineConfig(overrides: Partial<PipelineConfig> = {}): PipelineConfig {
  return {
    pipelineId: 'wf',
    slotName: 'stategrid_wf',
    publication: 'stategrid_pub',
    plugin: 'pgoutput',
    resync: false,
    batchRows: 1000,
    batchDelayMs: 50,
    segmentSeconds: 20,
    dwsRefreshMs: 1000,
    snapshotChunkRows: 10000,
    allowedLatenessMinutes: 10,
    closeGraceMinutes: 0,
    maxHistoryEvents: 4000,
    timeZone: 'UTC',
    ...overrides,
  };
}

/**
 * What one capture segment does: fail, or run for `ms` of real time (default 50) and report these days and
 * counts. A segment that runs until cancelled is how a test pauses or stops mid-segment without racing the
 * segment's own end; `flushMs` is how long it then takes to let go (the real one flushes its batch first).
 */
export type SegmentScript = {
  fail?: ApplicationFailure;
  days?: string[];
  applied?: number;
  ms?: number | 'until-cancelled';
  flushMs?: number;
  /** ODS columns the segment's health read finds waiting for a fill. */
  unfilledColumns?: number;
};

/** Scripted stand-ins for the pipeline's activities; every call is recorded for the assertions. */
export class FakePipelineActivities {
  capturesStarted = 0;
  capturesCompleted = 0;
  closes: { date: string; closedBy: string; scheduledAtMs: number; attempt: number }[] = [];
  /** Days whose first close attempt acts like one on a worker that died: no heartbeat, no result. */
  closesLostOnce = new Set<string>();
  slotDrops = 0;
  /** Inputs of the verifies the pipeline started (the fill of unfilled ODS columns). */
  verifies: Required<VerifyInput>[] = [];
  private lsn = 0x100;

  constructor(
    private readonly config: PipelineConfig,
    private readonly segment: (n: number) => SegmentScript = () => ({}),
  ) {}

  activities(): Partial<Activities> {
    return {
      validatePipelineInput: async () => this.config,
      preparePipeline: async () => ({ phase: 'streaming', confirmedLsn: '0/100' }),
      captureChanges: () => this.capture(),
      closeDayWindowActivity: async (input) => {
        const ctx = Context.current();
        const { scheduledTimestampMs: scheduledAtMs, attempt } = ctx.info;
        this.closes.push({ date: input.date, closedBy: input.closedBy, scheduledAtMs, attempt });
        if (attempt === 1 && this.closesLostOnce.has(input.date)) {
          // Ends only with the worker's shutdown (or after a minute): the server hears nothing from it meanwhile.
          await Promise.race([ctx.cancelled, new Promise((r) => setTimeout(r, 60_000))]).catch(
            () => undefined,
          );
          throw new Error('lost with its worker');
        }
        // The workflow only awaits the close; the refresh counts are not read.
        return { date: input.date, newlyClosed: true } as Awaited<
          ReturnType<Activities['closeDayWindowActivity']>
        >;
      },
      validateVerifyInput: async (input) => input as Required<VerifyInput>,
      verifyWarehouseActivity: async (input) => {
        this.verifies.push(input);
        return { pipelineId: input.pipelineId, equal: true, seconds: 0.1, rechecks: 0, mismatched: {} };
      },
      dropPipelineSlot: async () => {
        this.slotDrops += 1;
        return { slotDropped: true, publicationDropped: true };
      },
    };
  }

  private async capture(): Promise<CaptureSegmentResult> {
    const script = this.segment(++this.capturesStarted);
    if (script.fail) throw script.fail;
    const ctx = Context.current();
    // Heartbeats carry cancellation (pause/stop) to the activity, as in the real capture.
    const beat = setInterval(() => ctx.heartbeat(), 20);
    try {
      await ctx.sleep(script.ms === 'until-cancelled' ? 3_600_000 : (script.ms ?? 50));
    } catch (err) {
      await new Promise((r) => setTimeout(r, script.flushMs ?? 0));
      throw err;
    } finally {
      clearInterval(beat);
    }
    this.capturesCompleted += 1;
    const applied = script.applied ?? 1;
    this.lsn += 0x10;
    return {
      confirmedLsn: `0/${this.lsn.toString(16).toUpperCase()}`,
      applied,
      skipped: 0,
      batches: 1,
      deadLetters: 0,
      perTable: { power_user: 0, power_consumption: applied },
      dwsRefreshes: 0,
      revisions: 0,
      writeMs: 0,
      refreshMs: 0,
      maxEventTime: null,
      days: script.days ?? [],
      seconds: 0.1,
      slotLagBytes: 0,
      orphans: 0,
      deadLettersTotal: 0,
      ...(script.unfilledColumns !== undefined ? { unfilledColumns: script.unfilledColumns } : {}),
      // Two workers taking turns; the queue is the one this worker polls, so affinity finds it.
      worker: { identity: `fake-${'ab'[this.capturesCompleted % 2]}`, taskQueue: ctx.info.taskQueue },
    };
  }
}

/** Runs `fn` while a worker with the given activities polls `taskQueue`. */
export async function withWorker<T>(
  env: TestWorkflowEnvironment,
  taskQueue: string,
  fakes: FakePipelineActivities,
  fn: () => Promise<T>,
): Promise<T> {
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: { codePath: WORKFLOW_BUNDLE },
    // Heartbeats are what deliver a cancellation; unthrottled, a pause reaches the segment within milliseconds.
    maxHeartbeatThrottleInterval: '20 ms',
    activities: fakes.activities(),
  });
  return worker.runUntil(fn());
}

/** Polls in real time: workflow progress here is driven by real activity completions. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

export function countEvents(events: HistoryEvent[] | null | undefined, has: (e: HistoryEvent) => unknown) {
  return (events ?? []).filter((e) => !!has(e)).length;
}

/** Writes a history as binary protobuf into test/fixtures, where the replay test picks it up. */
export function recordFixture(name: string, history: temporal.api.history.v1.IHistory): void {
  const file = path.resolve(__dirname, '../../../test/fixtures', `${name}.history.pb`);
  fs.writeFileSync(file, temporal.api.history.v1.History.encode(history).finish());
}
