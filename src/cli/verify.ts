import { InvalidArgumentError, type Command } from 'commander';
import { Presets, SingleBar } from 'cli-progress';
import {
  LAYERS_OF,
  verifyWarehouse,
  type RepairSummary,
  type VerifyProgress,
  type VerifyReport,
} from '../verify/warehouse';
import type { VerifyLayerChoice } from '../workflows/contract';
import { formatTable, printJson, say } from './output';
import { config } from './shared';

function printReport(r: VerifyReport): void {
  say(
    formatTable(
      r.tables.map((t) => ({
        layer: t.layer,
        table: t.table,
        checked: t.checked,
        missing: t.counts.missing,
        extra: t.counts.extra,
        different: t.counts.different,
      })),
    ),
  );
  for (const t of r.tables) {
    for (const kind of ['missing', 'extra', 'different'] as const) {
      if (t[kind].length)
        say(`${t.table} ${kind}: ${t[kind].join(', ')}${t.counts[kind] > t[kind].length ? ', …' : ''}`);
    }
  }
  if (r.repair) printRepair(r.repair);
  say(
    r.equal
      ? `the warehouse equals its source (${r.seconds.toFixed(1)} s)`
      : `the warehouse differs from its source after ${r.rechecks} re-checks (${r.seconds.toFixed(1)} s)`,
  );
}

function printRepair(repair: RepairSummary): void {
  const actions = ['inserted', 'updated', 'deleted', 'recomputed', 'skipped'] as const;
  say(`repaired in ${repair.rounds} round(s); before repairing:`);
  say(
    formatTable(
      Object.entries(repair.found).map(([table, found]) => ({
        table,
        found,
        ...Object.fromEntries(actions.map((a) => [a, repair.repaired[table]?.[a] ?? 0])),
      })),
    ),
  );
}

const TABLES_PER_LAYER = { ods: 2, dwd: 2, dws: 1 } as const;

/**
 * Progress on stderr: a bar of compared tables in a terminal (a repair's second comparison extends it), lines
 * otherwise.
 */
function verifyProgress(tables: number): { report: VerifyProgress; stop: () => void } {
  if (!process.stderr.isTTY) return { report: (m) => console.error(m), stop: () => undefined };
  const bar = new SingleBar(
    { format: 'verify {bar} {value}/{total} tables | {message}', stream: process.stderr },
    Presets.shades_classic,
  );
  bar.start(tables, 0, { message: 'comparing' });
  return {
    report: (message, step) => {
      if (step !== 'compared') return bar.update({ message });
      if (bar.getProgress() >= 1) bar.setTotal(bar.getTotal() + tables);
      bar.increment({ message });
    },
    stop: () => bar.stop(),
  };
}

/**
 * `stategrid verify [--repair]`: exit 0 when the sink equals the source (after repairing, with --repair), 1 with
 * what differs, 2 on error.
 */
export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('compare the warehouse with its source while the pipeline streams')
    .option('--id <pipelineId>', 'pipeline id', 'default')
    .option(
      '--layer <layer>',
      'ods, dwd, dws or all',
      (v) => {
        if (!(v in LAYERS_OF)) throw new InvalidArgumentError('must be ods, dwd, dws or all');
        return v;
      },
      'all',
    )
    .option('--repair', 're-read what differs from the source and apply it while the pipeline streams')
    .option('--json', 'machine-readable output')
    .action(async (o: { id: string; layer: string; repair?: boolean; json?: boolean }) => {
      try {
        const layers = LAYERS_OF[o.layer as VerifyLayerChoice];
        const progress = verifyProgress(layers.map((l) => TABLES_PER_LAYER[l]).reduce((a, b) => a + b, 0));
        const report = await verifyWarehouse(config(), o.id, layers, progress.report, {
          repair: !!o.repair,
        }).finally(progress.stop);
        if (o.json) printJson(report);
        else printReport(report);
        process.exitCode = report.equal ? 0 : 1;
      } catch (err) {
        console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
        process.exitCode = 2;
      }
    });
}
