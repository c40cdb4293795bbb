import { z } from 'zod';
import { WORKFLOW_TASK_TIMEOUT_LIMITS_MS, type AppConfig } from '../config';
import {
  DEFAULT_RESTART_MARK_MS,
  type PipelineConfig,
  type RecomputeInput,
  type RecomputeRangeInput,
  type VerifyInput,
} from '../workflows/contract';

/** zod schemas for workflow inputs; activities validate them so workflows stay free of non-SDK imports. */
const safeName = z.string().regex(/^[a-z0-9_]{1,48}$/, 'must match [a-z0-9_]{1,48}');
const isoDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date YYYY-MM-DD')
  // Date.parse rolls 2026-02-30 over to March; a real calendar date survives the round trip.
  .refine((d) => {
    const t = Date.parse(d + 'T00:00:00Z');
    return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === d;
  }, 'is not a valid calendar date');

const timeZone = z.string().refine((tz) => {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, 'is not a known IANA time zone');

export function pipelineInputSchema(cfg: AppConfig) {
  return z
    .object({
      pipelineId: safeName.default('default'),
      slotName: safeName.optional(),
      publication: safeName.default('stategrid_pub'),
      plugin: z.enum(['pgoutput', 'wal2json']).default(cfg.decodingPlugin),
      resync: z.boolean().default(false),
      batchRows: z.number().int().min(1).max(100000).default(5000),
      batchDelayMs: z.number().int().min(1).max(60000).default(100),
      segmentSeconds: z.number().int().min(5).max(3600).default(20),
      dwsRefreshMs: z.number().int().min(100).max(600000).default(1000),
      snapshotChunkRows: z.number().int().min(100).max(1000000).default(100000),
      // Chunk loads in flight across all workers (each an activity any worker takes).
      snapshotParallelism: z.number().int().min(1).max(32).default(4),
      // How often the source logs its running transactions while changes flow (0: never; see capture.ts).
      restartMarkMs: z.number().int().min(0).max(600000).default(DEFAULT_RESTART_MARK_MS),
      allowedLatenessMinutes: z.number().min(0).max(10080).default(10),
      closeGraceMinutes: z.number().min(0).max(10080).default(30),
      // A worker that takes the workflow over (its cache died with a worker) replays the whole run first, within
      // one workflow task timeout: at load average ~10 on 2 cores 1,000 events took up to 7.3 s, 500 up to 4.4 s,
      // 200 up to 1.5 s (a streaming run, ~6.5 events per segment, continues as new every ~30 segments).
      maxHistoryEvents: z.number().int().min(20).max(40000).default(200),
      // Set on the run by the client that starts it and on every continue-as-new (see src/config.ts).
      workflowTaskTimeoutMs: z
        .number()
        .int()
        .min(WORKFLOW_TASK_TIMEOUT_LIMITS_MS.min)
        .max(WORKFLOW_TASK_TIMEOUT_LIMITS_MS.max)
        .default(cfg.workflowTaskTimeoutMs),
      timeZone: timeZone.default(cfg.timeZone),
    })
    .strict()
    .transform((v) => ({ ...v, slotName: v.slotName ?? `stategrid_${v.pipelineId}` }));
}

export const recomputeInputSchema = z
  .object({
    date: isoDate.optional(),
    pipelineId: safeName.default('default'),
    timeZone: timeZone.optional(),
  })
  .strict();

/** A range of at most a year, days in order, a bounded number at a time (each runs a whole-day recompute). */
export const recomputeRangeInputSchema = z
  .object({
    from: isoDate,
    to: isoDate,
    pipelineId: safeName.default('default'),
    concurrency: z.number().int().min(1).max(16).default(4),
  })
  .strict()
  .refine((r) => r.from <= r.to, { message: 'from must not be after to', path: ['from'] })
  .refine((r) => (Date.parse(r.to) - Date.parse(r.from)) / 86_400_000 < 366, {
    message: 'at most 366 days',
    path: ['to'],
  });

export function parseRecomputeRangeInput(input: unknown): Required<RecomputeRangeInput> {
  const parsed = recomputeRangeInputSchema.safeParse(input ?? {});
  if (!parsed.success) throw new Error(formatZodError('recompute range input', parsed.error));
  return parsed.data;
}

export const verifyInputSchema = z
  .object({
    pipelineId: safeName.default('default'),
    layer: z.enum(['ods', 'dwd', 'dws', 'all']).default('all'),
    repair: z.boolean().default(false),
  })
  .strict();

export function formatZodError(what: string, err: z.ZodError): string {
  return `invalid ${what}: ${err.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`).join('; ')}`;
}

export function parsePipelineInput(cfg: AppConfig, input: unknown): PipelineConfig {
  const parsed = pipelineInputSchema(cfg).safeParse(input ?? {});
  if (!parsed.success) throw new Error(formatZodError('pipeline input', parsed.error));
  return parsed.data;
}

export function parseRecomputeInput(
  input: unknown,
): Required<Pick<RecomputeInput, 'pipelineId'>> & RecomputeInput {
  const parsed = recomputeInputSchema.safeParse(input ?? {});
  if (!parsed.success) throw new Error(formatZodError('recompute input', parsed.error));
  return parsed.data;
}

export function parseVerifyInput(input: unknown): Required<VerifyInput> {
  const parsed = verifyInputSchema.safeParse(input ?? {});
  if (!parsed.success) throw new Error(formatZodError('verify input', parsed.error));
  return parsed.data;
}
