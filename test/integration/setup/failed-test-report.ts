import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../../../src/config';
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
