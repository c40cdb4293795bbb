import { InvalidArgumentError, type Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import type { AppConfig } from '../config';
import { recomputeDayWorkflow } from '../control/pipeline';
import type { RecomputeResult } from '../workflows/contract';
import { say } from './output';
import { config, isoDate, withTemporal } from './shared';

function daysBetween(from: string, to: string): string[] {
  const days: string[] = [];
  for (let t = Date.parse(from + 'T00:00:00Z'); t <= Date.parse(to + 'T00:00:00Z'); t += 86_400_000) {
    days.push(new Date(t).toISOString().slice(0, 10));
  }
  return days;
}

async function recomputeRange(
  cfg: AppConfig,
  from: string,
  to: string,
  pipelineId: string,
): Promise<RecomputeResult[]> {
  const days = daysBetween(from, to);
  if (!days.length) throw new InvalidArgumentError('--from must not be after --to');
  const interactive = !!process.stdout.isTTY;
  const bar = interactive
    ? new SingleBar(
        { format: 'recompute {bar} {value}/{total} days | {date} drift {drift}' },
        Presets.shades_classic,
      )
    : null;
  bar?.start(days.length, 0, { date: '', drift: 0 });
  const results: RecomputeResult[] = [];
  await withTemporal(async (client) => {
    for (const [i, date] of days.entries()) {
      const r = await recomputeDayWorkflow(cfg, client, { date, pipelineId });
      results.push(r);
      if (bar) bar.update(i + 1, { date, drift: r.drift });
      else say(`recompute ${i + 1}/${days.length} ${date}: drift ${r.drift} rows`);
    }
  });
  bar?.stop();
  return results;
}

/** `stategrid recompute --from --to`. */
export function registerRecompute(program: Command): void {
  program
    .command('recompute')
    .description('recompute DWS for a range of days from DWD, reporting drift')
    .requiredOption('--from <date>', 'first day', isoDate)
    .requiredOption('--to <date>', 'last day', isoDate)
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .action(async (o) => {
      const results = await recomputeRange(config(), o.from, o.to, o.id);
      const drift = results.reduce((a, r) => a + r.drift, 0);
      say(`recomputed ${results.length} days, total drift ${drift} rows`);
    });
}
