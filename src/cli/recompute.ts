import type { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { recomputeRangeWorkflowRun } from '../control/pipeline';
import type { RecomputeRangeResult } from '../workflows/contract';
import { say } from './output';
import { config, int, isoDate, withTemporal } from './shared';

export type RangeOptions = { from: string; to: string; id: string; concurrency?: number };

/**
 * Runs a range of days as one recomputeRangeWorkflow (days in parallel over the workers, `--concurrency` at a time):
 * a bar of days done in a terminal, a line per change otherwise.
 */
export async function recomputeRange(o: RangeOptions, idPrefix?: string): Promise<RecomputeRangeResult> {
  const cfg = config();
  const bar = process.stdout.isTTY
    ? new SingleBar(
        { format: 'recompute {bar} {value}/{total} days | running {running}' },
        Presets.shades_classic,
      )
    : null;
  let lastDone = -1;
  const result = await withTemporal((client) =>
    recomputeRangeWorkflowRun(
      cfg,
      client,
      { from: o.from, to: o.to, pipelineId: o.id, ...(o.concurrency ? { concurrency: o.concurrency } : {}) },
      (p) => {
        const running = p.running.join(' ') || '-';
        if (bar) {
          if (!bar.isActive) bar.start(p.total, 0, { running });
          bar.update(p.done, { running });
        } else if (p.done !== lastDone) {
          lastDone = p.done;
          say(`recompute ${p.done}/${p.total} days (running: ${running})`);
        }
      },
      idPrefix,
    ),
  );
  bar?.stop();
  for (const d of result.days)
    if (d.drift) say(`  ${d.date}: drift ${d.drift} rows, ${d.revisions} revisions`);
  say(`recomputed ${result.days.length} days, total drift ${result.drift} rows`);
  return result;
}

export const rangeOptions = (cmd: Command) =>
  cmd
    .requiredOption('--from <date>', 'first day', isoDate)
    .requiredOption('--to <date>', 'last day', isoDate)
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option(
      '--concurrency <n>',
      'days at a time (default STATEGRID_RECOMPUTE_CONCURRENCY, 4)',
      int('--concurrency'),
    );

/** `stategrid recompute --from --to [--concurrency]`. */
export function registerRecompute(program: Command): void {
  rangeOptions(
    program.command('recompute').description('recompute DWS for a range of days from DWD, reporting drift'),
  ).action(async (o: RangeOptions) => {
    await recomputeRange(o);
  });
}
