import type { AppConfig } from '../config';
import { readSqlFile } from './sql';
import { setRolePassword } from './admin';
import { withClient } from './client';

/**
 * `stategrid db init`: source tables, publication and CDC role on the source; all sink tables and the sink role
 * (`STATEGRID_SINK_PASSWORD`, default stategrid_sink) on the sink.
 */
export async function initDatabases(cfg: AppConfig, cdcPassword: string): Promise<void> {
  await withClient(cfg.sourceUrl, async (source) => {
    await source.query(readSqlFile('01_source.sql'));
    await source.query(readSqlFile('02_cdc_role.sql'));
    await setRolePassword(source, 'stategrid_cdc', cdcPassword);
  });
  await withClient(cfg.sinkUrl, async (sink) => {
    await sink.query(readSqlFile('03_sink.sql'));
    await sink.query(readSqlFile('05_dwd_indexes.sql'));
    await sink.query(readSqlFile('04_sink_role.sql'));
    await setRolePassword(sink, 'stategrid_sink', process.env.STATEGRID_SINK_PASSWORD ?? 'stategrid_sink');
  });
}
