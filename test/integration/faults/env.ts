/**
 * The fault suite's own stack (home and ports) so it never disturbs a demo or `npm test` stack. The worker reaches
 * the sink through a TCP proxy the suite controls, which lets it refuse sink connections while the source stays up.
 * STATEGRID_FAULTS_PG_PORT, STATEGRID_FAULTS_TEMPORAL_ADDRESS and STATEGRID_FAULTS_PROXY_PORT move it elsewhere, so
 * that two runs on one machine do not collide (the Web UI and metrics ports follow the Temporal port).
 */
import path from 'node:path';

const root = path.resolve(__dirname, '../../../..');
const pgPort = process.env.STATEGRID_FAULTS_PG_PORT ?? '54359';
const temporalAddress = process.env.STATEGRID_FAULTS_TEMPORAL_ADDRESS ?? '127.0.0.1:7263';
const temporalPort = Number(temporalAddress.split(':').pop());
const own: Record<string, string> = {
  STATEGRID_HOME: path.join(root, '.stategrid-faults'),
  STATEGRID_PG_PORT: pgPort,
  TEMPORAL_ADDRESS: temporalAddress,
  STATEGRID_TEMPORAL_UI_PORT: String(temporalPort + 1000),
  STATEGRID_METRICS_PORT: String(temporalPort + 2221),
  STATEGRID_LOG_LEVEL: 'info',
};
for (const [k, v] of Object.entries(own)) process.env[`TEST_${k}`] ??= v;
// eslint-disable-next-line @typescript-eslint/no-require-imports
require('../setup/env');

export const SINK_PROXY_PORT = Number(process.env.STATEGRID_FAULTS_PROXY_PORT ?? 54360);
process.env.STATEGRID_SINK_URL = `postgres://postgres:postgres@127.0.0.1:${SINK_PROXY_PORT}/stategrid_db`;
