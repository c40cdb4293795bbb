import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { withClient } from '../../src/db/client';
import { initDatabases } from '../../src/db/init';
import { resetEverything, startPipeline, waitCaughtUp } from '../../src/control/pipeline';
import { tlsRootCert } from '../../src/stack/postgres';
import { ownWorkerTestContext, PIPELINE_ID } from './helpers/pipeline';

/**
 * Least privilege and TLS: the CDC role can replicate and read the two source tables and nothing else, the sink
 * role is no superuser, and a whole pipeline runs with both roles over verified TLS without printing a password.
 */
describe('roles and TLS', function () {
  this.timeout(240000);
  const SECURE = 'secure';
  const QUEUE = 'stategrid-secure';
  const { t, spawn } = ownWorkerTestContext(SECURE);

  it('gives the CDC role REPLICATION and SELECT on the two source tables only, and the sink role no superuser', async () => {
    const roles = await t.q(
      `SELECT rolname, rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles
       WHERE rolname IN ('stategrid_cdc', 'stategrid_sink') ORDER BY rolname`,
    );
    assert.deepEqual(roles, [
      {
        rolname: 'stategrid_cdc',
        rolsuper: false,
        rolreplication: true,
        rolcreatedb: false,
        rolcreaterole: false,
        rolbypassrls: false,
      },
      {
        rolname: 'stategrid_sink',
        rolsuper: false,
        rolreplication: false,
        rolcreatedb: false,
        rolcreaterole: false,
        rolbypassrls: false,
      },
    ]);
    const cdc = await t.q<{ table_name: string; privilege_type: string }>(
      `SELECT table_name::text, privilege_type::text FROM information_schema.role_table_grants
       WHERE grantee = 'stategrid_cdc' ORDER BY 1, 2`,
    );
    assert.deepEqual(cdc, [
      { table_name: 'power_consumption', privilege_type: 'SELECT' },
      { table_name: 'power_user', privilege_type: 'SELECT' },
    ]);
    const sinkOnSource = await t.q(
      `SELECT 1 FROM information_schema.role_table_grants
       WHERE grantee = 'stategrid_sink' AND table_name IN ('power_user', 'power_consumption')`,
    );
    assert.equal(sinkOnSource.length, 0, 'the sink role cannot touch the source tables');
  });

  it('takes hostile config values (role passwords) literally: no SQL runs, the password works', async () => {
    const hostile = `x'; DROP TABLE power_user; --"\\ 密码`;
    process.env.STATEGRID_SINK_PASSWORD = hostile;
    try {
      await initDatabases(t.cfg, hostile);
      for (const role of ['stategrid_cdc', 'stategrid_sink']) {
        const url = `postgres://${role}:${encodeURIComponent(hostile)}@127.0.0.1:${t.cfg.pgPort}/stategrid_db`;
        const who = await withClient(url, (c) => c.query<{ u: string }>('SELECT current_user AS u'));
        assert.equal(who.rows[0].u, role);
      }
      const table = await t.q(`SELECT 1 FROM pg_tables WHERE tablename = 'power_user'`);
      assert.equal(table.length, 1);
    } finally {
      delete process.env.STATEGRID_SINK_PASSWORD;
      await initDatabases(t.cfg, 'stategrid_cdc');
    }
  });

  it('runs a whole pipeline as stategrid_cdc / stategrid_sink over verified TLS (sslmode passes through)', async () => {
    await resetEverything(t.cfg, t.client, PIPELINE_ID);
    await t.q(
      `INSERT INTO power_user VALUES (1, 'ü名', '居民用电', 1, '北京', now()), (2, 'b', '商业用电', 2, '上海', now())`,
    );
    const tls = `sslmode=verify-full&sslrootcert=${encodeURIComponent(tlsRootCert(t.cfg))}`;
    const base = `127.0.0.1:${t.cfg.pgPort}/stategrid_db?${tls}`;
    const home = path.join(t.cfg.home, 'secure-worker');
    const env = {
      ...process.env,
      STATEGRID_HOME: home,
      STATEGRID_SOURCE_URL: `postgres://stategrid_cdc:stategrid_cdc@${base}`,
      STATEGRID_SINK_URL: `postgres://stategrid_sink:stategrid_sink@${base}`,
      STATEGRID_TASK_QUEUE: QUEUE,
      STATEGRID_METRICS_PORT: '0',
    };
    const cfg = loadConfig(env);
    const { logFile } = await spawn(env);

    await startPipeline(cfg, t.client, { pipelineId: SECURE, segmentSeconds: 5, batchDelayMs: 50 });
    await t.q(`INSERT INTO power_consumption SELECT g, 1 + g % 2, 2.50, 1.40, '2026-11-21 10:00:00'
      FROM generate_series(1, 3000) g`);
    assert.ok(await waitCaughtUp(t.cfg, SECURE, 120000), 'caught up');
    await t.assertConverged();

    type Session = { usename: string; backend_type: string; ssl: boolean };
    let sessions: Session[] = [];
    // The walsender appears once the capture runs: wait for it.
    await t.waitFor('the CDC role walsender', async () => {
      sessions = await t.q<Session>(
        `SELECT a.usename::text, a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.usename IN ('stategrid_cdc', 'stategrid_sink')`,
      );
      return sessions.some((s) => s.usename === 'stategrid_cdc' && s.backend_type === 'walsender');
    });
    assert.ok(sessions.some((s) => s.usename === 'stategrid_sink'));
    assert.ok(
      sessions.every((s) => s.ssl),
      `every pipeline connection uses TLS: ${JSON.stringify(sessions)}`,
    );

    const log = fs.readFileSync(logFile, 'utf8');
    assert.ok(log.includes('stategrid_sink:***@'), 'the sink URL is logged masked');
    assert.ok(!/stategrid_(cdc|sink):stategrid_/.test(log), 'no password in the worker log');
  });
});
