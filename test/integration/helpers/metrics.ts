import assert from 'node:assert/strict';
import type { AppConfig } from '../../../src/config';

/** The test worker's /metrics page. */
export async function scrapeMetrics(cfg: AppConfig): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${cfg.metricsPort}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/**
 * The value of `series` (`name{label="v",…}`, the labels it must carry) on a scraped page; 0 when absent. Every
 * series also carries the worker's identity (worker="…"), one process per worker.
 */
export function metricValue(page: string, series: string): number {
  const [name, labels] = series.split('{');
  const wanted = (labels ?? '').replace(/}$/, '').split(',');
  const line = page
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.includes(w)) && l.includes('worker="'));
  return line ? Number(line.split(' ')[1]) : 0;
}
