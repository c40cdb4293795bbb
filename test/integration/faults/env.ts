/**
 * The fault suite's own stack (home and ports) so it never disturbs a demo or `npm test` stack. The worker reaches
 * the sink through a TCP proxy the suite controls, which lets it refuse sink connections while the source stays up.
 */
import path from 'node:path';

const root = path.resolve(__dirname, '../../../..');
const own: Record<string, string> = {
  STATEGRID_HOME: path.join(root, '.stategrid-faults'),
  STATEGRID_PG_PORT: '54359',
  TEMPORAL_ADDRESS: '127.0.0.1:7263',
  STATEGRID_TEMPORAL_UI_PORT: '8263',
  STATEGRID_METRICS_PORT: '9484',
  STATEGRID_LOG_LEVEL: 'info',
};
for (const [k, v] of Object.entries(own)) process.env[`TEST_${k}`] ??= v;
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../setup/env');

export const SINK_PROXY_PORT = 54360;
process.env.STATEGRID_SINK_URL = `postgres://postgres:postgres@127.0.0.1:${SINK_PROXY_PORT}/stategrid_db`;
