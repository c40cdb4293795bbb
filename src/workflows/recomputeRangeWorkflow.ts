import { setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import { rangeProgressQuery, type RecomputeRangeResult, type RecomputeResult } from './contract';
import { recomputeActivities as acts } from './recompute-activity';
import { inputValidators, validated } from './validation';

/**
 * Recomputes a range of days (`recompute --from --to`, `schedule backfill`): each day is one recompute activity,
 * at most `concurrency` at a time, so the days spread over every worker polling the task queue. The result lists
 * every day's drift in date order.
 */
export async function recomputeRangeWorkflow(input?: unknown): Promise<RecomputeRangeResult> {
  const valid = await validated(() => inputValidators.validateRecomputeRangeInput(input ?? {}));
  upsertSearchAttributes({ StategridPipelineId: [valid.pipelineId] });
  const days = daysFrom(valid.from, valid.to);
  const results = new Map<string, RecomputeResult>();
  const running = new Set<string>();
  setHandler(rangeProgressQuery, () => ({ done: results.size, total: days.length, running: [...running] }));
  const show = () =>
    setCurrentDetails(
      `**${results.size}/${days.length} days** recomputed (${valid.from} … ${valid.to}), ` +
        `drift ${sumDrift(results.values())} rows; running: ${[...running].join(', ') || 'none'}`,
    );
  let next = 0;
  const lane = async () => {
    while (next < days.length) {
      const date = days[next++];
      running.add(date);
      show();
      const r = await acts.recomputeDayActivity.executeWithOptions(
        { summary: `recompute DWS for ${date} (pipeline ${valid.pipelineId})` },
        [{ pipelineId: valid.pipelineId, date }],
      );
      running.delete(date);
      results.set(date, r);
      show();
    }
  };
  await Promise.all(Array.from({ length: Math.min(valid.concurrency, days.length) }, lane));
  const ordered = days.map((d) => results.get(d)!);
  return { days: ordered, drift: sumDrift(ordered) };
}

function daysFrom(from: string, to: string): string[] {
  const days: string[] = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += 86_400_000)
    days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}

function sumDrift(results: Iterable<RecomputeResult>): number {
  let drift = 0;
  for (const r of results) drift += r.drift;
  return drift;
}
