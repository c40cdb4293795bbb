import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} from '@temporalio/client';
import { parsePipelineInput } from '../activities/inputs';
import { dropSlot, slotFigures, sourceRowCount, truncateSource, type SlotFigures } from '../cdc/source-admin';
import type { AppConfig } from '../config';
import { withClient } from '../db/client';
import { taskQueuePollers, type Poller } from '../temporal/pollers';
import { ensureSearchAttributes } from '../temporal/search-attributes';
import { initDatabases } from '../db/init';
import { readCheckpoint } from '../sink/checkpoint';
import { sinkFigures, truncateSink, type SinkFigures } from '../sink/status';
import type { cdcPipelineWorkflow } from '../workflows/cdcPipelineWorkflow';
import type { dailyRecomputeWorkflow } from '../workflows/dailyRecomputeWorkflow';
import type { recomputeRangeWorkflow } from '../workflows/recomputeRangeWorkflow';
import {
  pauseUpdate,
  rangeProgressQuery,
  resumeUpdate,
  statusQuery,
  stopUpdate,
  WorkflowType,
  type PipelineState,
  type RangeProgress,
  type RecomputeRangeInput,
  type RecomputeRangeResult,
  type RecomputeResult,
} from '../workflows/contract';

export type { SinkFigures, SlotFigures };
export { waitCaughtUp } from '../verify/caught-up';

/** Client-side control of pipelines: what the CLI and the tests use. */
export const pipelineWorkflowId = (pipelineId: string) => `stategrid-pipeline-${pipelineId}`;

export async function temporalClient(
  cfg: AppConfig,
): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ ...cfg.temporal.connection, connectTimeout: 5000 });
  const client = new Client({ connection, namespace: cfg.temporalNamespace });
  return { client, close: () => connection.close() };
}

export async function startPipeline(
  cfg: AppConfig,
  client: Client,
  input: Record<string, unknown>,
): Promise<{ workflowId: string; alreadyRunning: boolean }> {
  // Validate here too, so a bad option fails at the command line instead of in the workflow.
  const config = parsePipelineInput(cfg, input);
  const workflowId = pipelineWorkflowId(config.pipelineId);
  // The workflow sets them from its first task; a server without them would fail every task.
  await ensureSearchAttributes(client.connection.operatorService, cfg.temporalNamespace);
  try {
    await client.workflow.start<typeof cdcPipelineWorkflow>(WorkflowType.pipeline, {
      taskQueue: cfg.taskQueue,
      workflowId,
      args: [input],
      // From its first task; every continue-as-new sets it again (cdcPipelineWorkflow).
      workflowTaskTimeout: config.workflowTaskTimeoutMs,
      staticSummary: `CDC ${config.plugin} slot ${config.slotName} → ODS, DWD, DWS (pipeline ${config.pipelineId})`,
    });
    return { workflowId, alreadyRunning: false };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId, alreadyRunning: true };
    throw err;
  }
}

/** The pipeline's workflow, typed by its definition: its query and updates are called by their definitions. */
export const pipelineHandle = (client: Client, pipelineId: string) =>
  client.workflow.getHandle<typeof cdcPipelineWorkflow>(pipelineWorkflowId(pipelineId));

export const pipelineState = (client: Client, pipelineId: string): Promise<PipelineState> =>
  pipelineHandle(client, pipelineId).query(statusQuery);

/** Returns once the running segment has stopped applying and left the slot (phase 'paused'). */
export const pausePipeline = (client: Client, pipelineId: string): Promise<PipelineState> =>
  pipelineHandle(client, pipelineId).executeUpdate(pauseUpdate);

/** Returns once the pipeline streams again. */
export const resumePipeline = (client: Client, pipelineId: string): Promise<PipelineState> =>
  pipelineHandle(client, pipelineId).executeUpdate(resumeUpdate);

/** Returns the final state once the workflow has stopped (and dropped the slot and publication if asked). */
export async function stopPipeline(
  client: Client,
  pipelineId: string,
  opts: { dropSlot: boolean },
): Promise<PipelineState> {
  const handle = pipelineHandle(client, pipelineId);
  const state = await handle.executeUpdate(stopUpdate, { args: [{ dropSlot: opts.dropSlot }] });
  await handle.result();
  return state;
}

/**
 * One day's recompute as its own workflow run (`workflowId` by default from the day and the time); returns its
 * drift.
 */
export function recomputeDayWorkflow(
  cfg: AppConfig,
  client: Client,
  input: { pipelineId: string; date: string },
  workflowId = `stategrid-recompute-${input.pipelineId}-${input.date}-${Date.now()}`,
): Promise<RecomputeResult> {
  return client.workflow.execute<typeof dailyRecomputeWorkflow>(WorkflowType.recompute, {
    taskQueue: cfg.taskQueue,
    workflowId,
    args: [input],
    workflowTaskTimeout: cfg.workflowTaskTimeoutMs,
  });
}

/**
 * A range of days as one `recomputeRangeWorkflow` (days in parallel, bounded, over every worker); `onProgress`
 * sees the days done about once a second until it ends.
 */
export async function recomputeRangeWorkflowRun(
  cfg: AppConfig,
  client: Client,
  input: Required<Pick<RecomputeRangeInput, 'from' | 'to' | 'pipelineId'>> & { concurrency?: number },
  onProgress: (p: RangeProgress) => void,
  idPrefix = 'stategrid-recompute-range',
): Promise<RecomputeRangeResult> {
  // Temporal's 10-s workflow task timeout: a year's range has a history of thousands of events, whose cold replay
  // after a worker died would not fit the pipeline's shorter one; nothing waits on this run's next task.
  const handle = await client.workflow.start<typeof recomputeRangeWorkflow>(WorkflowType.recomputeRange, {
    taskQueue: cfg.taskQueue,
    workflowId: `${idPrefix}-${input.pipelineId}-${input.from}-${input.to}-${Date.now()}`,
    args: [{ concurrency: cfg.recomputeConcurrency, ...input }],
  });
  let finished = false;
  const result = handle.result().finally(() => (finished = true));
  while (!finished) {
    const p = await handle.query(rangeProgressQuery).catch(() => undefined);
    if (p) onProgress(p);
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
  return result;
}

export type PipelineStatus = {
  workflowId: string;
  workflowStatus: string;
  state: PipelineState | null;
  sink: SinkFigures;
  slot: SlotFigures;
  /** Workers polling the pipeline's activities (any host): snapshot chunks, segments, day closes. */
  workers: Poller[];
};

export async function pipelineStatus(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
): Promise<PipelineStatus> {
  const workflowId = pipelineWorkflowId(pipelineId);
  const handle = pipelineHandle(client, pipelineId);
  let workflowStatus = 'NOT_FOUND';
  let state: PipelineState | null = null;
  try {
    const desc = await handle.describe();
    workflowStatus = desc.status.name;
    state = workflowStatus === 'RUNNING' ? await handle.query(statusQuery) : null;
  } catch (err) {
    if (!(err instanceof Error && /not found/i.test(err.message))) throw err;
  }
  const sink = await withClient(cfg.sinkUrl, (db) => sinkFigures(db, pipelineId));
  const slotName = sink.checkpoint?.slot_name ?? state?.config?.slotName ?? `stategrid_${pipelineId}`;
  const slot = await slotFigures(cfg.sourceUrl, slotName);
  return {
    workflowId,
    workflowStatus,
    state,
    sink,
    slot,
    workers: await taskQueuePollers(client.workflowService, cfg.temporalNamespace, cfg.taskQueue, 'activity'),
  };
}

/** Terminates a pipeline's workflow if it runs (tests and benchmarks start from a clean slate). */
export async function terminatePipeline(client: Client, pipelineId: string, reason: string): Promise<void> {
  try {
    await client.workflow.getHandle(pipelineWorkflowId(pipelineId)).terminate(reason);
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError) && !/not found|already completed/i.test(String(err)))
      throw err;
  }
}

/**
 * Empties source and sink after stopping the pipeline and dropping its slot: the clean slate of tests and
 * benchmarks. Never used by the product's own commands.
 */
export async function resetEverything(cfg: AppConfig, client: Client, pipelineId: string): Promise<void> {
  await terminatePipeline(client, pipelineId, 'reset');
  await dropSlot(cfg.sourceUrl, `stategrid_${pipelineId}`);
  await initDatabases(cfg, process.env.STATEGRID_CDC_PASSWORD ?? 'stategrid_cdc');
  await truncateSource(cfg.sourceUrl);
  await withClient(cfg.sinkUrl, truncateSink);
}

/** Waits until the pipeline's snapshot is done and it streams. */
export async function waitStreaming(cfg: AppConfig, pipelineId: string, timeoutMs: number): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await readCheckpoint(sink, pipelineId))?.phase === 'streaming') return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`pipeline ${pipelineId} did not finish its snapshot in ${timeoutMs / 1000}s`);
  });
}

export type SnapshotProgress = { phase: string; rows: number; total: number };

/**
 * Follows a pipeline until its snapshot is done, reporting rows copied (committed to the sink) out of
 * the source's row count. Returns the final phase ('streaming', or 'failed'/'stopped' if it ended early).
 */
export async function followSnapshot(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
  report: (p: SnapshotProgress) => void,
  intervalMs = 1000,
): Promise<string> {
  const total = await sourceRowCount(cfg.sourceUrl);
  const handle = pipelineHandle(client, pipelineId);
  // One sink connection for the whole follow, not one per poll.
  return withClient(cfg.sinkUrl, async (sink) => {
    for (;;) {
      const desc = await handle.describe();
      if (desc.status.name !== 'RUNNING') return desc.status.name.toLowerCase();
      const state = await handle.query(statusQuery);
      if (state.phase !== 'validating' && state.phase !== 'snapshot') {
        const copied = state.snapshot ? Object.values(state.snapshot.rows).reduce((a, b) => a + b, 0) : total;
        report({ phase: state.phase, rows: copied, total: Math.max(total, copied) });
        return state.phase;
      }
      // The sink checkpoint counts committed snapshot chunks (heartbeats reach the server only every ~24 s).
      const rows = Number((await readCheckpoint(sink, pipelineId))?.snapshot_rows ?? 0);
      report({ phase: state.phase, rows, total: Math.max(total, rows) });
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  });
}
