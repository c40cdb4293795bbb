import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from './activities';
import { StreamPark } from './cdc/stream-park';
import { WORKFLOW_BUNDLE } from './build/bundle-workflows';
import { loadConfig, maskUrl } from './config';
import { createLogger, installSdkLogger } from './observability/log';
import { countRunning, labelWorker, serveMetrics } from './observability/metrics';
import { keepValuesAsText, openPool } from './db/client';
import { DwsRefreshers } from './sink/dws-refresher';
import { ensureSearchAttributes } from './temporal/search-attributes';

/**
 * Wires logging, metrics, connection, task queues, workflows and activities; nothing else. Two pollers share the
 * activities: the pipeline's task queue (workflows and every activity) and this worker's own queue, where the
 * workflow sends the capture segments that continue the replication stream parked here (capture affinity).
 */
export async function runWorker(cfg = loadConfig()): Promise<void> {
  keepValuesAsText();
  const logger = createLogger(cfg.logLevel);
  installSdkLogger(logger);
  const sink = openPool(
    { connectionString: cfg.sinkUrl, max: 6, application_name: 'stategrid-worker' },
    (err) => logger.warn({ sink: maskUrl(cfg.sinkUrl), err: err.message }, 'sink pool error'),
  );
  const metricsServer = serveMetrics(
    cfg.metricsPort,
    (port) => logger.info({ port }, `metrics on http://127.0.0.1:${port}/metrics`),
    (err) => logger.warn({ err: err.message }, 'metrics endpoint not started (STATEGRID_METRICS_PORT)'),
  );
  const streams = new StreamPark();
  const refreshers = new DwsRefreshers(sink, (message, fields) => logger.warn(fields, message));
  const connection = await NativeConnection.connect(cfg.temporal.connection);
  const registered = await ensureSearchAttributes(connection.operatorService, cfg.temporalNamespace);
  if (registered.length) logger.info({ searchAttributes: registered }, 'registered search attributes');
  labelWorker(cfg.workerId);
  const activities = countRunning(
    createActivities({
      cfg,
      sink,
      streams,
      refreshers,
      worker: { identity: cfg.workerId, taskQueue: cfg.workerQueue },
    }),
  );
  const common = {
    connection,
    namespace: cfg.temporalNamespace,
    identity: cfg.workerId,
    activities,
    // A pause reaches a running capture segment only through a heartbeat response; the default throttle (80 % of
    // the heartbeat timeout) delayed `pipeline pause` by seconds.
    maxHeartbeatThrottleInterval: '1s',
  } as const;
  const worker = await Worker.create({
    ...common,
    taskQueue: cfg.taskQueue,
    // Prebuilt by `npm run build`; bundling here would run webpack in every worker start.
    ...(fs.existsSync(WORKFLOW_BUNDLE)
      ? { workflowBundle: { codePath: WORKFLOW_BUNDLE } }
      : { workflowsPath: require.resolve('./workflows') }),
    maxConcurrentActivityTaskExecutions: 20,
    // A workflow cached on a worker that died waits this long on that worker's sticky queue before any other
    // worker takes its next task (10 s by default): capture moves elsewhere only after that task. A live worker
    // keeps a poll waiting on its sticky queue, so even 1 s costs it nothing but under a stall (a replay).
    stickyQueueScheduleToStartTimeout: '1s',
  });
  const captureWorker = await Worker.create({
    ...common,
    taskQueue: cfg.workerQueue,
    maxConcurrentActivityTaskExecutions: 4,
  });
  const readyFile = path.join(cfg.home, 'run', `${cfg.workerName}.ready`);
  fs.mkdirSync(path.dirname(readyFile), { recursive: true });
  fs.writeFileSync(readyFile, `${process.pid}\n`);
  logger.info(
    {
      worker: cfg.workerId,
      taskQueue: cfg.taskQueue,
      captureQueue: cfg.workerQueue,
      temporal: cfg.temporal.summary,
      sink: maskUrl(cfg.sinkUrl),
      pid: process.pid,
    },
    'worker polling',
  );
  try {
    // Both stop on SIGINT/SIGTERM (the SDK's runtime shuts every worker down); one failing stops the other.
    const stop = (other: Worker) => () => {
      if (other.getState() === 'RUNNING') other.shutdown();
    };
    await Promise.all([worker.run().finally(stop(captureWorker)), captureWorker.run().finally(stop(worker))]);
  } finally {
    metricsServer?.close();
    await streams.closeAll(); // a stream kept for the next capture segment would hold the process open
    await refreshers.drainAll();
    await sink.end();
    await connection.close();
  }
}

/**
 * Started by `stategrid worker` (STATEGRID_WORKER_PARENT: the command's pid): stop as on SIGTERM once that command
 * is gone, so a command killed outright (SIGKILL, which it cannot pass on) leaves no worker behind in its own
 * process group.
 */
function stopWithParent(parent: string | undefined): void {
  if (!parent) return;
  const check = setInterval(() => {
    if (String(process.ppid) === parent) return;
    clearInterval(check);
    process.kill(process.pid, 'SIGTERM');
  }, 1000);
  check.unref();
}

if (require.main === module) {
  stopWithParent(process.env.STATEGRID_WORKER_PARENT);
  runWorker().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
