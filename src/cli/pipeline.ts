import { InvalidArgumentError, Option, type Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { dropSlot } from '../cdc/source-admin';
import type { AppConfig } from '../config';
import {
  followSnapshot,
  pausePipeline,
  pipelineHandle,
  pipelineStatus,
  pipelineWorkflowId,
  resumePipeline,
  startPipeline,
  stopPipeline,
  type PipelineStatus,
} from '../control/pipeline';
import { printJson, say } from './output';
import { config, withTemporal, type TemporalClient } from './shared';

function printStatus(s: PipelineStatus): void {
  const st = s.state;
  const cp = s.sink.checkpoint;
  say(`pipeline ${s.workflowId}: workflow ${s.workflowStatus}, phase ${st?.phase ?? cp?.phase ?? 'unknown'}`);
  if (st?.error) say(`  ERROR: ${st.error}`);
  if (cp) {
    say(`  checkpoint: commit ${cp.commit_lsn}#${cp.seq}, confirmed ${cp.confirmed_lsn}, dws ${cp.dws_lsn}`);
    say(
      `  snapshot rows: ${cp.snapshot_rows}, changes applied: ${cp.changes_applied}, max event: ${cp.max_event_time}`,
    );
  }
  say(
    `  slot: ${s.slot.exists ? `${s.slot.active ? 'active' : 'inactive'}, lag ${s.slot.lagBytes} bytes, wal ${s.slot.walStatus}` : 'MISSING'}`,
  );
  const d = s.slot.decoded;
  if (d) {
    say(
      `  decoded: ${d.bytes} bytes, spilled to disk ${d.spilledBytes} bytes in ${d.spilledTransactions} transactions`,
    );
    // A spilled transaction is read back from disk at its commit: correct, but slower.
    if (d.spilledTransactions > 0)
      say(
        '  (transactions larger than STATEGRID_DECODING_WORK_MEM_MB spill; a larger setting keeps them in memory)',
      );
  }
  if (st?.lastSegment) {
    say(
      `  last segment: ${st.lastSegment.applied} changes in ${st.lastSegment.seconds}s (${st.lastSegment.rowsPerSecond}/s)` +
        (st.lastSegment.worker ? ` on ${st.lastSegment.worker}` : ''),
    );
  }
  if (st?.captureQueue) say(`  capture stays on: ${st.captureQueue}`);
  const perWorker = Object.entries(st?.totals.perWorker ?? {});
  if (perWorker.length)
    say(
      `  changes applied per worker: ${perWorker.map(([id, w]) => `${id} ${w.applied} (${w.segments} segments)`).join(', ')}`,
    );
  say(`  workers: ${s.workers.map((w) => w.identity).join(', ') || 'none polling'}`);
  say(
    `  dead letters: ${s.sink.deadLetters}, orphans: ${s.sink.orphans}, late events: ${s.sink.lateEvents}, revisions: ${s.sink.revisions}, closed days: ${s.sink.closedDays}`,
  );
  if (st) say(`  open days: ${st.openDays.join(', ') || '-'}`);
  const v = s.sink.lastVerify;
  if (v) {
    const differing = Object.entries(v.mismatched).filter(([, n]) => n > 0);
    say(
      `  last verify: ${v.finished_at}, ${v.equal ? 'equal to the source' : `differs (${differing.map(([t, n]) => `${t} ${n}`).join(', ')})`}`,
    );
  }
  const r = s.sink.lastRepair;
  if (r) {
    const counts = Object.entries(r.counts).map(
      ([t, actions]) =>
        `${t} ${Object.entries(actions)
          .map(([a, n]) => `${a} ${n}`)
          .join(' ')}`,
    );
    say(`  last repair: ${r.at}, ${counts.join(', ')}`);
  }
  for (const c of s.sink.odsColumns) {
    const state = { mirrored: 'mirrored', dropped: 'DROPPED at the source, kept', skipped: 'NOT mirrored' }[
      c.state
    ];
    say(`  column ${c.table}.${c.name} (${c.type ?? '?'}): ${state}${c.detail ? ` (${c.detail})` : ''}`);
  }
  for (const [t, n] of Object.entries(s.sink.rows)) say(`  ${t.padEnd(30)} ${n}`);
}

/** Snapshot progress: a bar in an interactive terminal, a line every few seconds otherwise. */
async function showSnapshotProgress(
  cfg: AppConfig,
  client: TemporalClient,
  pipelineId: string,
): Promise<void> {
  const interactive = !!process.stdout.isTTY;
  const bar = interactive
    ? new SingleBar({ format: 'snapshot {bar} {value}/{total} rows | {phase}' }, Presets.shades_classic)
    : null;
  let lastLine = 0;
  const phase = await followSnapshot(cfg, client, pipelineId, (p) => {
    if (bar) {
      if (!bar.isActive) bar.start(p.total, 0, { phase: p.phase });
      bar.setTotal(p.total);
      bar.update(p.rows, { phase: p.phase });
    } else if (Date.now() - lastLine >= 5000 || p.phase !== 'snapshot') {
      lastLine = Date.now();
      say(`snapshot ${p.rows}/${p.total} rows (${p.phase})`);
    }
  });
  bar?.stop();
  if (phase !== 'streaming' && phase !== 'paused') {
    throw new Error(
      `pipeline ${pipelineId} is ${phase} after its snapshot; see \`stategrid pipeline status\``,
    );
  }
  say(`pipeline ${pipelineId} is ${phase}`);
}

type StartOptions = { id: string; plugin?: string; resync?: boolean; input?: string; detach?: boolean };

async function start(o: StartOptions): Promise<void> {
  const cfg = config();
  let extra: Record<string, unknown> = {};
  if (o.input) {
    try {
      extra = JSON.parse(o.input);
    } catch {
      throw new InvalidArgumentError('--input must be JSON');
    }
  }
  const input = {
    ...extra,
    pipelineId: o.id,
    ...(o.plugin ? { plugin: o.plugin } : {}),
    ...(o.resync ? { resync: true } : {}),
  };
  await withTemporal(async (client) => {
    const r = await startPipeline(cfg, client, input);
    say(r.alreadyRunning ? `pipeline ${r.workflowId} is already running` : `started ${r.workflowId}`);
    if (!o.detach) await showSnapshotProgress(cfg, client, o.id);
  });
}

async function stop(o: { id: string; dropSlot?: boolean }): Promise<void> {
  const cfg = config();
  await withTemporal(async (client) => {
    const running = await pipelineHandle(client, o.id)
      .describe()
      .then(
        (d) => d.status.name === 'RUNNING',
        () => false,
      );
    if (!running) {
      // An abandoned pipeline: no workflow to stop, but its slot may still hold WAL.
      const slot = `stategrid_${o.id}`;
      const dropped = o.dropSlot ? await dropSlot(cfg.sourceUrl, slot) : false;
      say(
        `pipeline ${pipelineWorkflowId(o.id)} is not running` +
          (o.dropSlot ? (dropped ? `; dropped slot ${slot}` : `; no slot ${slot}`) : ''),
      );
      return;
    }
    await stopPipeline(client, o.id, { dropSlot: !!o.dropSlot });
    say(`stopped ${pipelineWorkflowId(o.id)}${o.dropSlot ? ' and dropped its slot and publication' : ''}`);
  });
}

/** `stategrid pipeline start|status|pause|resume|stop`. */
export function registerPipeline(program: Command): void {
  const pipeline = program.command('pipeline').description('the CDC pipeline workflow');
  pipeline
    .command('start')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .addOption(new Option('--plugin <plugin>', 'decoding plugin').choices(['pgoutput', 'wal2json']))
    .option('--resync', 'drop the slot and take a fresh snapshot')
    .option('--input <json>', 'extra workflow input as JSON (batchRows, segmentSeconds, ...)')
    .option('--detach', 'return once the workflow is started instead of following the snapshot')
    .action(start);
  pipeline
    .command('status')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const cfg = config();
      await withTemporal(async (client) => {
        const s = await pipelineStatus(cfg, client, o.id);
        if (o.json) printJson(s);
        else printStatus(s);
      });
    });
  // Both return once the change took effect: paused means the running segment has stopped applying.
  for (const [name, update] of [
    ['pause', pausePipeline],
    ['resume', resumePipeline],
  ] as const) {
    pipeline
      .command(name)
      .option('--id <pipelineId>', 'pipeline id', 'default')
      .action(async (o) => {
        await withTemporal(async (client) => {
          const state = await update(client, o.id);
          say(`${pipelineWorkflowId(o.id)} is ${state.phase} at LSN ${state.confirmedLsn}`);
        });
      });
  }
  pipeline
    .command('stop')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option('--drop-slot', 'also drop the replication slot and publication')
    .action(stop);
}
