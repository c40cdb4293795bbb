import fs from 'node:fs';
import path from 'node:path';
import { decodePendingActivityState } from '@temporalio/client';
import type { AppConfig } from '../../../src/config';
import { pipelineHandle, temporalClient } from '../../../src/control/pipeline';
import { withClient } from '../../../src/db/client';
import { workerLogSizes, workerProcesses } from '../../../src/stack/workers';

/** Lines of a worker log worth showing after a failed test: warnings, errors, and whatever is not a JSON entry. */
function troubled(line: string): boolean {
  if (!line.trim()) return false;
  try {
    const entry = JSON.parse(line) as { level?: number };
    return (entry.level ?? 0) >= 40;
  } catch {
    return true; // the SDK core's own output, a crash's stack trace
  }
}

/**
 * What the stack's workers did during a failed test: whether each still runs, and the last warnings and errors
 * its log gained since `since` (workerLogSizes at the test's start). CI keeps no logs of a fresh clone; this is
 * what remains of them in its output.
 */
export function workerReport(cfg: AppConfig, since: Map<string, number>, maxLines = 30): string[] {
  const out: string[] = [];
  for (const w of workerProcesses(cfg))
    out.push(`${w.name}: ${w.up ? `running (pid ${w.pid})` : 'not running'}`);
  for (const [file, size] of workerLogSizes(cfg)) {
    const added = fs
      .readFileSync(file)
      .subarray(Math.min(since.get(file) ?? 0, size))
      .toString('utf8')
      .split('\n')
      .filter(troubled);
    if (!added.length) continue;
    out.push(`${path.basename(file)}: ${added.length} warnings or errors during the test, the last ones:`);
    for (const line of added.slice(-maxLines))
      out.push(`  ${line.length > 400 ? `${line.slice(0, 400)}…` : line}`);
  }
  return out;
}

/**
 * The workers' database sessions (what each waits for, how long its transaction is open) and the test pipeline's
 * pending activities (attempt, last failure): where a pipeline that stopped moving is stuck.
 */
export async function pipelineReport(cfg: AppConfig, pipelineId: string): Promise<string[]> {
  const out: string[] = [];
  try {
    const sessions = await withClient(cfg.sinkUrl, (db) =>
      db.query<Record<string, string>>(
        `SELECT application_name AS app, state, coalesce(wait_event_type || ':' || wait_event, '-') AS waits,
           coalesce(round(extract(epoch FROM now() - xact_start))::text || ' s', '-') AS xact,
           left(btrim(regexp_replace(query, '\\s+', ' ', 'g')), 100) AS query
         FROM pg_stat_activity WHERE application_name LIKE 'stategrid%' ORDER BY xact_start NULLS LAST`,
      ),
    );
    out.push(`worker sessions: ${sessions.rows.length}`);
    for (const r of sessions.rows)
      out.push(`  ${r.app} ${r.state} waits ${r.waits} xact ${r.xact}: ${r.query}`);
  } catch (err) {
    out.push(`worker sessions not read: ${(err as Error).message}`);
  }
  try {
    const { client, close } = await temporalClient(cfg);
    try {
      const desc = await pipelineHandle(client, pipelineId).describe();
      out.push(`pipeline ${pipelineId}: ${desc.status.name}`);
      const pending = desc.status.name === 'RUNNING' ? (desc.raw.pendingActivities ?? []) : [];
      for (const a of pending)
        out.push(
          `  ${a.activityType?.name} attempt ${a.attempt} ${decodePendingActivityState(a.state) ?? a.state}` +
            (a.lastFailure?.message ? `, last failure: ${a.lastFailure.message.slice(0, 200)}` : ''),
        );
    } finally {
      await close();
    }
  } catch (err) {
    out.push(`pipeline ${pipelineId} not described: ${(err as Error).message}`);
  }
  return out;
}
