import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import pg from 'pg';
import { createActivities } from './activities';
import { WORKFLOW_BUNDLE } from './build/bundle-workflows';
import { loadConfig, maskUrl } from './config';
import './cdc/decoders'; // registers text type parsers before any pool is used

/** Wires connection, task queue, workflows and activities; nothing else. */
async function main(): Promise<void> {
  const cfg = loadConfig();
  const sink = new pg.Pool({ connectionString: cfg.sinkUrl, max: 6, application_name: 'stategrid-worker' });
  sink.on('error', (err) => console.error(`sink pool error (${maskUrl(cfg.sinkUrl)}): ${err.message}`));
  const connection = await NativeConnection.connect({ address: cfg.temporalAddress });
  const worker = await Worker.create({
    connection,
    namespace: cfg.temporalNamespace,
    taskQueue: cfg.taskQueue,
    // Prebuilt by `npm run build`; bundling here would run webpack in every worker start.
    ...(fs.existsSync(WORKFLOW_BUNDLE)
      ? { workflowBundle: { codePath: WORKFLOW_BUNDLE } }
      : { workflowsPath: require.resolve('./workflows') }),
    activities: createActivities(cfg, sink),
    maxConcurrentActivityTaskExecutions: 20,
  });
  const readyFile = path.join(cfg.home, 'run', 'worker.ready');
  fs.mkdirSync(path.dirname(readyFile), { recursive: true });
  fs.writeFileSync(readyFile, `${process.pid}\n`);
  console.log(`worker polling ${cfg.taskQueue} on ${cfg.temporalAddress} (pid ${process.pid})`);
  try {
    await worker.run();
  } finally {
    await sink.end();
    await connection.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
