import type { Command } from 'commander';
import { maskUrl } from '../config';
import { initDatabases } from '../db/init';
import { say } from './output';
import { cdcPassword, config } from './shared';

/** `stategrid db init`. */
export function registerDb(program: Command): void {
  program
    .command('db')
    .description('database setup')
    .command('init')
    .description('create source tables, publication, CDC role and all sink tables (idempotent)')
    .action(async () => {
      const cfg = config();
      await initDatabases(cfg, cdcPassword());
      say(`initialised source ${maskUrl(cfg.sourceUrl)} and sink ${maskUrl(cfg.sinkUrl)}`);
    });
}
