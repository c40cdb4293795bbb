/** The test stack runs beside a user's demo stack: own home and ports. Imported before any config is loaded. */
import path from 'node:path';

const root = path.resolve(__dirname, '../../../..');
const defaults: Record<string, string> = {
  STATEGRID_HOME: path.join(root, '.stategrid-test'),
  STATEGRID_PG_PORT: '54339',
  TEMPORAL_ADDRESS: '127.0.0.1:7243',
  STATEGRID_TEMPORAL_UI_PORT: '8243',
  STATEGRID_TASK_QUEUE: 'stategrid-cdc',
  STATEGRID_METRICS_PORT: '9474',
  STATEGRID_LOG_LEVEL: 'info',
};
for (const [k, v] of Object.entries(defaults)) process.env[k] = process.env[`TEST_${k}`] ?? v;
delete process.env.STATEGRID_SOURCE_URL;
delete process.env.STATEGRID_SINK_URL;
export const REPO_ROOT = root;

/** Port of the PostgreSQL cluster a test starts for a sink of its own (sink-database.test.ts). */
export const SINK_CLUSTER_PORT = process.env.TEST_STATEGRID_SINK_PG_PORT ?? '54338';
