import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { dropSlot } from '../../src/cdc/source-admin';
import { loadConfig } from '../../src/config';
import { stopPipeline, temporalClient } from '../../src/control/pipeline';
import { serverHome } from '../../src/stack/temporal-server';
import { runStategridIn, TestContext } from './helpers/pipeline';
import { runWholePipeline } from './helpers/whole-pipeline';

/**
 * `stack up --temporal server`: the production Temporal server (v1.29.1) with its persistence in PostgreSQL
 * and mutual TLS on the frontend. A whole pipeline runs through it with a client certificate; a client without
 * one is refused. The stack uses the test cluster as an external PostgreSQL and leaves it running.
 */
describe('the production Temporal server with PostgreSQL persistence and mTLS', function () {
  this.timeout(600000);
  const t = new TestContext();
  const PIPELINE = 'prodserver';
  const PORT = 7400;
  let env: NodeJS.ProcessEnv;
  let other: Awaited<ReturnType<typeof temporalClient>> | undefined;

  before(async () => {
    await t.open();
    const home = path.join(t.cfg.home, 'production-server');
    env = {
      ...process.env,
      STATEGRID_HOME: home,
      STATEGRID_SOURCE_URL: t.cfg.sourceUrl,
      STATEGRID_SINK_URL: t.cfg.sinkUrl,
      TEMPORAL_ADDRESS: `127.0.0.1:${PORT}`,
      STATEGRID_METRICS_PORT: '0',
    };
    const up = runStategridIn(env, ['stack', 'up', '--temporal', 'server'], 600000);
    assert.equal(up.status, 0, up.stdout + up.stderr);
    assert.match(up.stdout, /temporal: started on 127\.0\.0\.1:7400 \(mTLS/);
  });
  after(async () => {
    await other?.close();
    const down = runStategridIn(env, ['stack', 'down']);
    assert.equal(down.status, 0, down.stderr);
    await dropSlot(t.cfg.sourceUrl, `stategrid_${PIPELINE}`);
    await t.close();
  });

  it('keeps its history in the temporal and temporal_visibility databases', async () => {
    const tables = await t.q<{ db: string }>(
      `SELECT datname AS db FROM pg_database WHERE datname IN ('temporal', 'temporal_visibility') ORDER BY 1`,
    );
    assert.deepEqual(
      tables.map((r) => r.db),
      ['temporal', 'temporal_visibility'],
    );
  });

  it('refuses a client without a certificate of its CA, and admits the same client with one', async () => {
    const tls = serverHome(loadConfig(env)).tlsDir;
    const read = (f: string) => fs.readFileSync(path.join(tls, f));
    const connect = (clientCertPair?: { crt: Buffer; key: Buffer }) =>
      Connection.connect({
        address: `127.0.0.1:${PORT}`,
        tls: { serverNameOverride: 'localhost', serverRootCACertificate: read('ca.crt'), clientCertPair },
        connectTimeout: 5000,
      });
    // The SDK reports a refused handshake as a failed connect; the server's log names the missing certificate.
    await assert.rejects(connect(), /Failed to connect|certificate required|handshake/i);
    await assert.rejects(Connection.connect({ address: `127.0.0.1:${PORT}`, connectTimeout: 5000 }));
    const admitted = await connect({ crt: read('client.crt'), key: read('client.key') });
    try {
      const info = await admitted.workflowService.getSystemInfo({});
      assert.ok(info.serverVersion, 'the certificate holder gets an answer');
    } finally {
      await admitted.close();
    }
  });

  it('runs a whole pipeline to the oracle over mTLS with the client certificate', async () => {
    const tls = serverHome(loadConfig(env)).tlsDir;
    const cfg = loadConfig({
      ...env,
      TEMPORAL_TLS_CLIENT_CERT_PATH: path.join(tls, 'client.crt'),
      TEMPORAL_TLS_CLIENT_KEY_PATH: path.join(tls, 'client.key'),
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: path.join(tls, 'ca.crt'),
      TEMPORAL_TLS_SERVER_NAME: 'localhost',
    });
    assert.match(cfg.temporal.summary, /mTLS/);
    other = await temporalClient(cfg);
    await runWholePipeline(t, cfg, other.client, PIPELINE);
    assert.equal((await stopPipeline(other.client, PIPELINE, { dropSlot: true })).phase, 'stopped');
  });

  it('answers the stack profile to commands of its home without any TEMPORAL_* setting', () => {
    const bare = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('TEMPORAL_')));
    const status = runStategridIn(bare, ['stack', 'status']);
    assert.equal(status.status, 0, status.stderr);
    assert.match(status.stdout, /temporal: up \(production server/);
    assert.match(status.stdout, /worker: +up \(pid \d+\)/);
    assert.match(status.stdout, /pollers: +1 \(/);
  });
});
