import { InvalidArgumentError } from 'commander';
import { loadConfig, type AppConfig } from '../config';
import { temporalClient } from '../control/pipeline';

/** Helpers shared by the command groups: settings, option parsers, a Temporal client for one command. */

export function config(): AppConfig {
  return loadConfig();
}

export const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};

export const isoDate = (v: string) => {
  const t = Date.parse(v + 'T00:00:00Z');
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v) || Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== v) {
    throw new InvalidArgumentError('must be a date YYYY-MM-DD');
  }
  return v;
};

export type TemporalClient = Awaited<ReturnType<typeof temporalClient>>['client'];

export async function withTemporal<T>(fn: (c: TemporalClient) => Promise<T>): Promise<T> {
  const t = await temporalClient(config());
  try {
    return await fn(t.client);
  } finally {
    await t.close();
  }
}

/** The CDC role's password for `db init` (and the demo). */
export const cdcPassword = () => process.env.STATEGRID_CDC_PASSWORD ?? 'stategrid_cdc';
