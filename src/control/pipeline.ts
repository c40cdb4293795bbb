import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} from '@temporalio/client';
import { parseLsn } from '../cdc/changes';
import type { AppConfig } from '../config';
import { parsePipelineInput } from '../activities/inputs';
import type { PipelineState } from '../workflows/types';
import { withClient } from '../db/client';
import { dropSlot } from '../cdc/snapshot';
import { initDatabases } from '../db/init';

/** Client-side control of pipelines: what the CLI and the tests use. */
export const pipelineWorkflowId = (pipelineId: string) => `stategrid-pipeline-${pipelineId}`;

export async function temporalClient(
  cfg: AppConfig,
): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: cfg.temporalAddress, connectTimeout: 5000 });
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
  try {
    await client.workflow.start('cdcPipelineWorkflow', {
      taskQueue: cfg.taskQueue,
      workflowId,
      args: [input],
      staticSummary: `CDC ${config.plugin} slot ${config.slotName} → ODS, DWD, DWS (pipeline ${config.pipelineId})`,
    });
    return { workflowId, alreadyRunning: false };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId, alreadyRunning: true };
    throw err;
  }
}

export type SinkFigures = {
  checkpoint: Record<string, unknown> | null;
  rows: Record<string, number>;
  deadLetters: number;
  orphans: number;
  lateEvents: number;
  revisions: number;
  closedDays: number;
};

const COUNTED_TABLES = [
  'ods_power_user',
  'ods_power_consumption',
  'ods_change_log',
  'dwd_power_user_info',
  'dwd_power_consumption_detail',
  'dws_region_daily_stats',
  'dws_user_ranking',
];

export async function sinkFigures(cfg: AppConfig, pipelineId: string): Promise<SinkFigures> {
  return withClient(cfg.sinkUrl, async (sink) => {
    const cp = await sink.query(
      `SELECT phase, slot_name, commit_lsn::text, seq, confirmed_lsn::text, dws_lsn::text, snapshot_rows,
         changes_applied, max_event_time::text, updated_at FROM stategrid_checkpoint WHERE pipeline_id = $1`,
      [pipelineId],
    );
    const counts = await sink.query(
      COUNTED_TABLES.map((t) => `SELECT '${t}' AS t, count(*)::bigint AS n FROM ${t}`).join(' UNION ALL '),
    );
    const extra = await sink.query(`SELECT
      (SELECT count(*) FROM stategrid_dead_letter)::bigint AS dead_letters,
      (SELECT count(*) FROM dwd_power_consumption_detail WHERE region_id IS NULL)::bigint AS orphans,
      (SELECT COALESCE(sum(late_events), 0) FROM stategrid_window)::bigint AS late_events,
      (SELECT count(*) FROM dws_revision)::bigint AS revisions,
      (SELECT count(*) FROM stategrid_window WHERE is_final)::bigint AS closed_days`);
    const e = extra.rows[0];
    return {
      checkpoint: cp.rows[0] ?? null,
      rows: Object.fromEntries(counts.rows.map((r) => [r.t, Number(r.n)])),
      deadLetters: Number(e.dead_letters),
      orphans: Number(e.orphans),
      lateEvents: Number(e.late_events),
      revisions: Number(e.revisions),
      closedDays: Number(e.closed_days),
    };
  });
}

export type SlotFigures = {
  exists: boolean;
  active: boolean;
  lagBytes: number | null;
  walStatus: string | null;
};

export async function slotFigures(cfg: AppConfig, slotName: string): Promise<SlotFigures> {
  return withClient(cfg.sourceUrl, async (source) => {
    const { rows } = await source.query(
      `SELECT active, wal_status, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint AS lag
       FROM pg_replication_slots WHERE slot_name = $1`,
      [slotName],
    );
    if (!rows.length) return { exists: false, active: false, lagBytes: null, walStatus: null };
    return {
      exists: true,
      active: rows[0].active,
      lagBytes: Number(rows[0].lag),
      walStatus: rows[0].wal_status,
    };
  });
}

export type PipelineStatus = {
  workflowId: string;
  workflowStatus: string;
  state: PipelineState | null;
  sink: SinkFigures;
  slot: SlotFigures;
};

export async function pipelineStatus(
  cfg: AppConfig,
  client: Client,
  pipelineId: string,
): Promise<PipelineStatus> {
  const workflowId = pipelineWorkflowId(pipelineId);
  const handle = client.workflow.getHandle(workflowId);
  let workflowStatus = 'NOT_FOUND';
  let state: PipelineState | null = null;
  try {
    const desc = await handle.describe();
    workflowStatus = desc.status.name;
    state = workflowStatus === 'RUNNING' ? await handle.query<PipelineState>('status') : null;
  } catch (err) {
    if (!(err instanceof Error && /not found/i.test(err.message))) throw err;
  }
  const sink = await sinkFigures(cfg, pipelineId);
  const slotName =
    (sink.checkpoint?.slot_name as string) ?? state?.config?.slotName ?? `stategrid_${pipelineId}`;
  return { workflowId, workflowStatus, state, sink, slot: await slotFigures(cfg, slotName) };
}

/**
 * `stategrid wait`: writes a marker into the source WAL, then waits until the pipeline has applied everything
 * before it to ODS/DWD (confirmed) and refreshed DWS after that (dws_lsn).
 */
export async function waitCaughtUp(cfg: AppConfig, pipelineId: string, timeoutMs: number): Promise<boolean> {
  const marker = await withClient(cfg.sourceUrl, async (source) => {
    const { rows } = await source.query(
      `SELECT pg_logical_emit_message(false, 'stategrid.wait', '')::text AS lsn`,
    );
    return parseLsn(rows[0].lsn);
  });
  return withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const { rows } = await sink.query(
        `SELECT phase, confirmed_lsn::text, dws_lsn::text FROM stategrid_checkpoint WHERE pipeline_id = $1`,
        [pipelineId],
      );
      const cp = rows[0];
      if (
        cp &&
        cp.phase === 'streaming' &&
        parseLsn(cp.confirmed_lsn) >= marker &&
        parseLsn(cp.dws_lsn) >= marker
      ) {
        return true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  });
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
  await withClient(cfg.sourceUrl, (db) => db.query(`TRUNCATE power_user, power_consumption`));
  await withClient(cfg.sinkUrl, (db) =>
    db.query(
      `TRUNCATE ods_power_user, ods_power_consumption, ods_change_log, dwd_power_user_info,
        dwd_power_consumption_detail, dws_region_daily_stats, dws_user_ranking, stategrid_checkpoint,
        stategrid_dead_letter, stategrid_dws_dirty, stategrid_window, dws_revision`,
    ),
  );
}

/** Waits until the pipeline's snapshot is done and it streams. */
export async function waitStreaming(cfg: AppConfig, pipelineId: string, timeoutMs: number): Promise<void> {
  await withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const { rows } = await sink.query(`SELECT phase FROM stategrid_checkpoint WHERE pipeline_id = $1`, [
        pipelineId,
      ]);
      if (rows[0]?.phase === 'streaming') return;
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
  const total = await withClient(cfg.sourceUrl, async (db) => {
    const { rows } = await db.query(
      `SELECT (SELECT count(*) FROM power_user) + (SELECT count(*) FROM power_consumption) AS n`,
    );
    return Number(rows[0].n);
  });
  const handle = client.workflow.getHandle(pipelineWorkflowId(pipelineId));
  // One sink connection for the whole follow, not one per poll.
  return withClient(cfg.sinkUrl, async (sink) => {
    for (;;) {
      const desc = await handle.describe();
      if (desc.status.name !== 'RUNNING') return desc.status.name.toLowerCase();
      const state = await handle.query<PipelineState>('status');
      if (state.phase !== 'validating' && state.phase !== 'snapshot') {
        const copied = state.snapshot ? Object.values(state.snapshot.rows).reduce((a, b) => a + b, 0) : total;
        report({ phase: state.phase, rows: copied, total: Math.max(total, copied) });
        return state.phase;
      }
      // The sink checkpoint counts committed snapshot chunks (heartbeats reach the server only every ~24 s).
      const cp = await sink.query(`SELECT snapshot_rows FROM stategrid_checkpoint WHERE pipeline_id = $1`, [
        pipelineId,
      ]);
      const rows = Number(cp.rows[0]?.snapshot_rows ?? 0);
      report({ phase: state.phase, rows, total: Math.max(total, rows) });
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  });
}
