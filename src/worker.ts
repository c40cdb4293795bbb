import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import pg from 'pg';
import { createActivities } from './activities';
import { StreamPark } from './cdc/stream-park';
import { WORKFLOW_BUNDLE } from './build/bundle-workflows';
import { loadConfig, maskUrl } from './config';
import { createLogger, installSdkLogger } from './observability/log';
import { serveMetrics } from './observability/metrics';
import { keepValuesAsText } from './db/client';
import { DwsRefreshers } from './sink/dws-refresher';
import { ensureSearchAttributes } from './temporal/search-attributes';

/** Wires logging, metrics, connection, task queue, workflows and activities; nothing else. */
async function main(): Promise<void> {
  keepValuesAsText();
  const cfg = loadConfig();
  const logger = createLogger(cfg.logLevel);
  installSdkLogger(logger);
  const sink = new pg.Pool({ connectionString: cfg.sinkUrl, max: 6, application_name: 'stategrid-worker' });
  sink.on('error', (err) => logger.warn({ sink: maskUrl(cfg.sinkUrl), err: err.message }, 'sink pool error'));
  const metricsServer = serveMetrics(
    cfg.metricsPort,
    (port) => logger.info({ port }, `metrics on http://127.0.0.1:${port}/metrics`),
    (err) => logger.warn({ err: err.message }, 'metrics endpoint not started (STATEGRID_METRICS_PORT)'),
  );
  const streams = new StreamPark();
  const refreshers = new DwsRefreshers(sink);
  const connection = await NativeConnection.connect(cfg.temporal.connection);
  const registered = await ensureSearchAttributes(connection.operatorService, cfg.temporalNamespace);
  if (registered.length) logger.info({ searchAttributes: registered }, 'registered search attributes');
  const worker = await Worker.create({
    connection,
    namespace: cfg.temporalNamespace,
    taskQueue: cfg.taskQueue,
    // Prebuilt by `npm run build`; bundling here would run webpack in every worker start.
    ...(fs.existsSync(WORKFLOW_BUNDLE)
      ? { workflowBundle: { codePath: WORKFLOW_BUNDLE } }
      : { workflowsPath: require.resolve('./workflows') }),
    activities: createActivities({ cfg, sink, streams, refreshers }),
    maxConcurrentActivityTaskExecutions: 20,
    // A pause reaches a running capture segment only through a heartbeat response; the default throttle (80 % of
    // the 20 s heartbeat timeout) made `pipeline pause` take up to 16 s.
    maxHeartbeatThrottleInterval: '1s',
  });
  const readyFile = path.join(cfg.home, 'run', 'worker.ready');
  fs.mkdirSync(path.dirname(readyFile), { recursive: true });
  fs.writeFileSync(readyFile, `${process.pid}\n`);
  logger.info(
    {
      taskQueue: cfg.taskQueue,
      temporal: cfg.temporal.summary,
      sink: maskUrl(cfg.sinkUrl),
      pid: process.pid,
    },
    'worker polling',
  );
  try {
    await worker.run();
  } finally {
    metricsServer?.close();
    await streams.closeAll(); // a stream kept for the next capture segment would hold the process open
    await refreshers.drainAll();
    await sink.end();
    await connection.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
