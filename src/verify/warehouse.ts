import { sourceColumns } from '../cdc/source-admin';
import type { AppConfig } from '../config';
import type { VerifyLayerChoice } from '../workflows/contract';
import { withClient } from '../db/client';
import { sharedExtraColumns } from '../schema/evolution';
import { SOURCE_TABLES, TABLE, type Column, type SourceTable } from '../schema/tables';
import { catalogColumns, markColumnsFilled, sinkClock } from '../sink/ods-columns';
import {
  chunkChecksums,
  differingDwsPartitions,
  recordVerifyRun,
  rowHashes,
  VERIFIED_TABLES,
  verifiedOdsTables,
  type ChunkSum,
  type VerifiedTable,
} from '../sink/verify-sql';
import { partitionKey } from '../sink/partition';
import { countRepairs, type RepairCounts, type RepairRecord } from '../sink/repair';
import { waitCaughtUp } from './caught-up';
import { repairDifferences } from './repair';

export type VerifyLayer = 'ods' | 'dwd' | 'dws';

/** What verify reports as it goes: a line, and `compared` when a table's first comparison is done. */
export type VerifyProgress = (message: string, step?: 'compared') => void;
/** The layers each `--layer` / workflow input choice compares. */
export const LAYERS_OF: Record<VerifyLayerChoice, VerifyLayer[]> = {
  ods: ['ods'],
  dwd: ['dwd'],
  dws: ['dws'],
  all: ['ods', 'dwd', 'dws'],
};

export type TableVerdict = {
  layer: VerifyLayer;
  table: string;
  /** ODS/DWD: rows on the source side; DWS: partitions checked (all days). */
  checked: number;
  /** Keys missing from the sink, extra in the sink, or different (ODS/DWD); (day, region) partitions (DWS). */
  missing: string[];
  extra: string[];
  different: string[];
  /** How many keys or partitions of each kind differ (the lists above hold the first 100). */
  counts: { missing: number; extra: number; different: number };
};

export type VerifyReport = {
  equal: boolean;
  seconds: number;
  rechecks: number;
  tables: TableVerdict[];
  /** With `repair`: what the first comparison found, and what the repair rounds wrote. */
  repair?: RepairSummary;
};

export type RepairSummary = {
  /** Repair rounds, each followed by a new comparison (the report's tables are the last one's). */
  rounds: number;
  /** Differing keys or partitions per table found before repairing. */
  found: Record<string, number>;
  /** Rows written (inserted, updated, deleted), partitions recomputed and keys left to the stream, per table. */
  repaired: RepairCounts;
};

const CHUNK_KEYS = 10_000;
const RECHECKS = 3;
const KEYS_LISTED = 100;
const REPAIR_ROUNDS = 3;

/**
 * Compares the sink with the source while the pipeline streams. ODS and DWD: chunk checksums computed in SQL on
 * both sides; differing chunks are drilled down to their keys. A difference may be a change the pipeline has not
 * applied yet, so differing chunks and partitions are checked again once the pipeline has caught up past a marker
 * written after the previous pass (up to three times); a key is reported only if it differed in two passes in a
 * row, so rows the stream brought in meanwhile are not. With `repair`, what differs is repaired
 * (src/verify/repair.ts) and compared again, up to three rounds; the report is the last comparison's.
 */
export async function verifyWarehouse(
  cfg: AppConfig,
  pipelineId: string,
  layers: VerifyLayer[],
  progress: VerifyProgress = () => undefined,
  opts: { repair?: boolean } = {},
): Promise<VerifyReport> {
  const started = Date.now();
  const sinkStart = await withClient(cfg.sinkUrl, sinkClock);
  let last = await compareRecorded(cfg, pipelineId, layers, progress);
  let repair: RepairSummary | undefined;
  if (opts.repair && !last.report.equal) {
    repair = { rounds: 0, found: mismatchedPerTable(last.report), repaired: {} };
    const records: RepairRecord[] = [];
    while (!last.report.equal && repair.rounds < REPAIR_ROUNDS) {
      repair.rounds += 1;
      const found = last.report.tables.map((t) => ({
        table: t.table,
        keys: [...t.missing, ...t.extra, ...t.different],
      }));
      records.push(...(await repairDifferences(cfg, pipelineId, last.runId, found, progress)));
      last = await compareRecorded(cfg, pipelineId, layers, progress);
    }
    repair.repaired = countRepairs(records);
  }
  const ods = last.report.tables.filter((t) => t.layer === 'ods');
  if (ods.length && ods.every(isEqual)) {
    const filled = await withClient(cfg.sinkUrl, (db) => markColumnsFilled(db, sinkStart));
    if (filled) progress(`${filled} ODS column(s) whose older rows waited for their values: filled`);
  }
  return {
    ...last.report,
    seconds: (Date.now() - started) / 1000,
    tables: last.report.tables.map(listed),
    ...(repair ? { repair } : {}),
  };
}

const isEqual = (t: TableVerdict) => !t.counts.missing && !t.counts.extra && !t.counts.different;

/** One comparison with every differing key (not only the listed ones), recorded in stategrid_verify_run. */
async function compareRecorded(
  cfg: AppConfig,
  pipelineId: string,
  layers: VerifyLayer[],
  progress: VerifyProgress,
): Promise<{ report: VerifyReport; runId: string }> {
  const started = Date.now();
  const tables: TableVerdict[] = [];
  let rechecks = 0;
  // The DWS check reads the sink alone, on one backend: run beside the ODS and DWD comparisons, it takes the CPU
  // they leave idle (each comparison's lighter side finishes first). Its rows are reported last, as before.
  const dws = layers.includes('dws')
    ? verifyDws(cfg, pipelineId, progress, () => (rechecks += 1))
    : Promise.resolve([]);
  dws.catch(() => undefined); // awaited below; a failure there must not surface as unhandled meanwhile
  for (const layer of layers.filter((l): l is 'ods' | 'dwd' => l !== 'dws')) {
    const specs = layer === 'ods' ? verifiedOdsTables(await extraOdsColumns(cfg)) : VERIFIED_TABLES[layer];
    for (const spec of specs) {
      const first = await compareChunks(cfg, spec);
      progress(`${spec.table}: ${first.checked} rows, ${first.chunks.length} chunks differ`, 'compared');
      let chunks = first.chunks;
      let verdict = verdictOf(layer, spec.table, first.checked, { missing: [], extra: [], different: [] });
      for (let round = 0; chunks.length && round < RECHECKS; round++) {
        rechecks += 1;
        // Nothing will change any more when the pipeline does not catch up (paused, stopped): report as is.
        const caughtUp = await waitCaughtUp(cfg, pipelineId, 30000);
        const found = await compareKeys(cfg, spec, chunks);
        verdict = verdictOf(
          layer,
          spec.table,
          first.checked,
          round === 0 ? found : persistent(found, verdict),
        );
        chunks = [...new Set([...verdict.missing, ...verdict.extra, ...verdict.different].map(chunkOf))];
        if (!caughtUp) break;
      }
      tables.push(verdict);
    }
  }
  tables.push(...(await dws));
  const equal = tables.every(isEqual);
  const report = { equal, seconds: (Date.now() - started) / 1000, rechecks, tables };
  const runId = await withClient(cfg.sinkUrl, (db) =>
    recordVerifyRun(db, pipelineId, {
      equal,
      mismatched: mismatchedPerTable(report),
      seconds: report.seconds,
    }),
  );
  return { report, runId };
}

/** Per table, the columns beyond the spec that the source and its ODS mirror both have (schema evolution). */
async function extraOdsColumns(cfg: AppConfig): Promise<Record<SourceTable, readonly Column[]>> {
  const [source, ods] = await Promise.all([
    withClient(cfg.sourceUrl, (db) => Promise.all(SOURCE_TABLES.map((t) => sourceColumns(db, t, null)))),
    withClient(cfg.sinkUrl, (db) => Promise.all(SOURCE_TABLES.map((t) => catalogColumns(db, TABLE[t].ods)))),
  ]);
  const extra = (i: number) => sharedExtraColumns(TABLE[SOURCE_TABLES[i]], source[i], ods[i]);
  return { power_user: extra(0), power_consumption: extra(1) };
}

/** Differing keys or partitions per table, in all (not only the ones listed). */
export function mismatchedPerTable(r: VerifyReport): Record<string, number> {
  return Object.fromEntries(
    r.tables.map((t) => [t.table, t.counts.missing + t.counts.extra + t.counts.different]),
  );
}

const chunkOf = (key: string) => (BigInt(key) / BigInt(CHUNK_KEYS)).toString();

async function compareChunks(
  cfg: AppConfig,
  spec: VerifiedTable,
): Promise<{ checked: number; chunks: string[] }> {
  // Both sides at once: the source and the sink are usually different servers.
  const [source, sink] = await Promise.all([
    withClient(cfg.sourceUrl, (db) => chunkChecksums(db, spec.source, CHUNK_KEYS)),
    withClient(cfg.sinkUrl, (db) => chunkChecksums(db, spec.sink, CHUNK_KEYS)),
  ]);
  const key = (c: ChunkSum) => `${c.rows}/${c.sum}`;
  const sinkByChunk = new Map(sink.map((c) => [c.chunk, key(c)]));
  const sourceByChunk = new Map(source.map((c) => [c.chunk, key(c)]));
  const chunks = new Set<string>();
  for (const [chunk, k] of sourceByChunk) if (sinkByChunk.get(chunk) !== k) chunks.add(chunk);
  for (const chunk of sinkByChunk.keys()) if (!sourceByChunk.has(chunk)) chunks.add(chunk);
  return { checked: source.reduce((n, c) => n + c.rows, 0), chunks: [...chunks] };
}

async function compareKeys(cfg: AppConfig, spec: VerifiedTable, chunks: string[]) {
  const [source, sink] = await Promise.all([
    withClient(cfg.sourceUrl, (db) => rowHashes(db, spec.source, CHUNK_KEYS, chunks)),
    withClient(cfg.sinkUrl, (db) => rowHashes(db, spec.sink, CHUNK_KEYS, chunks)),
  ]);
  const missing: string[] = [];
  const different: string[] = [];
  for (const [k, h] of source) {
    const other = sink.get(k);
    if (other === undefined) missing.push(k);
    else if (other !== h) different.push(k);
  }
  const extra = [...sink.keys()].filter((k) => !source.has(k));
  return { missing, extra, different };
}

async function verifyDws(
  cfg: AppConfig,
  pipelineId: string,
  progress: VerifyProgress,
  recheck: () => void,
): Promise<TableVerdict[]> {
  let differing = await withClient(cfg.sinkUrl, (db) => differingDwsPartitions(db, null));
  progress(`dws: ${differing.length} partitions differ from DWD`, 'compared');
  for (let round = 0; differing.length && round < RECHECKS; round++) {
    recheck();
    const caughtUp = await waitCaughtUp(cfg, pipelineId, 30000);
    const days = [...new Set(differing.map((d) => d.stat_date))];
    differing = await withClient(cfg.sinkUrl, (db) => differingDwsPartitions(db, days));
    if (!caughtUp) break;
  }
  return ['dws_region_daily_stats', 'dws_user_ranking'].map((table) =>
    verdictOf('dws', table, 0, {
      missing: [],
      extra: [],
      different: differing.filter((d) => d.table === table).map(partitionKey),
    }),
  );
}

type Differences = Pick<TableVerdict, 'missing' | 'extra' | 'different'>;

function verdictOf(layer: VerifyLayer, table: string, checked: number, d: Differences): TableVerdict {
  const counts = { missing: d.missing.length, extra: d.extra.length, different: d.different.length };
  return { layer, table, checked, ...d, counts };
}

/** The keys of `found` that also differed in the previous pass: a row in flight then is applied by now. */
function persistent(found: Differences, previous: Differences): Differences {
  const before = new Set([...previous.missing, ...previous.extra, ...previous.different]);
  const keep = (keys: string[]) => keys.filter((k) => before.has(k));
  return { missing: keep(found.missing), extra: keep(found.extra), different: keep(found.different) };
}

/** Keeps the report readable: the first keys of each kind (the counts say how many there are in all). */
function listed(v: TableVerdict): TableVerdict {
  return {
    ...v,
    missing: v.missing.slice(0, KEYS_LISTED),
    extra: v.extra.slice(0, KEYS_LISTED),
    different: v.different.slice(0, KEYS_LISTED),
  };
}
