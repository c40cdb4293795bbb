import { InvalidArgumentError, type Command } from 'commander';
import { LAYERS_OF, verifyWarehouse, type VerifyReport } from '../verify/warehouse';
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
  say(
    r.equal
      ? `the warehouse equals its source (${r.seconds.toFixed(1)} s)`
      : `the warehouse differs from its source after ${r.rechecks} re-checks (${r.seconds.toFixed(1)} s)`,
  );
}

/** `stategrid verify`: exit 0 when the sink equals the source, 1 with what differs, 2 on error. */
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
    .option('--json', 'machine-readable output')
    .action(async (o: { id: string; layer: string; json?: boolean }) => {
      try {
        const report = await verifyWarehouse(config(), o.id, LAYERS_OF[o.layer as VerifyLayerChoice], (m) =>
          console.error(m),
        );
        if (o.json) printJson(report);
        else printReport(report);
        process.exitCode = report.equal ? 0 : 1;
      } catch (err) {
        console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
        process.exitCode = 2;
      }
    });
}
