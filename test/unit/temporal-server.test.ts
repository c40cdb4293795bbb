import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config';
import {
  clientProfileToml,
  serverConfig,
  serverPorts,
  type ServerKit,
} from '../../src/stack/temporal-server';
import type { MtlsFiles } from '../../src/stack/certs';

/** The production server's config and client profile, built from a release-shaped template without any server. */
describe('production Temporal server config', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stategrid-server-'));
  const file = (name: string, text = 'pem') => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const tls: MtlsFiles = {
    caCert: file('ca.crt'),
    serverCert: file('server.crt'),
    serverKey: file('server.key'),
    clientCert: file('client.crt'),
    clientKey: file('client.key'),
    serverName: 'localhost',
  };
  const store = (db: string) => ({
    sql: { pluginName: 'postgres12', databaseName: db, connectAddr: '127.0.0.1:5432' },
  });
  const rpc = (grpcPort: number) => ({
    rpc: { grpcPort, membershipPort: grpcPort - 300, bindOnLocalHost: true },
  });
  const template = file(
    'development-postgres12.yaml',
    JSON.stringify({
      persistence: {
        datastores: {
          'postgres-default': store('temporal'),
          'postgres-visibility': store('temporal_visibility'),
        },
      },
      global: { pprof: { port: 7936 }, metrics: { prometheus: { listenAddress: '127.0.0.1:8000' } } },
      services: { frontend: rpc(7233), history: rpc(7234), matching: rpc(7235), worker: rpc(7239) },
      clusterMetadata: { clusterInformation: { active: { rpcAddress: 'localhost:7233' } } },
    }),
  );
  const kit: ServerKit = { server: 'server', sqlTool: 'sql', schemaDir: dir, configTemplate: template };
  const cfg = loadConfig({
    HOME: dir,
    STATEGRID_HOME: dir,
    STATEGRID_PG_PORT: '54339',
    TEMPORAL_ADDRESS: '127.0.0.1:7400',
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lays the four services out around the frontend port without overlaps', () => {
    const ports = Object.values(serverPorts(7400)).flatMap((p) => Object.values(p));
    assert.equal(new Set(ports).size, ports.length);
    assert.equal(serverPorts(7233).frontend.membershipPort, 6933, 'the release layout for the default port');
  });

  it('points persistence at our cluster, requires client certificates and opens no side ports', () => {
    const doc = parse(serverConfig(cfg, kit, 'pw', tls));
    for (const s of Object.values(doc.persistence.datastores) as { sql: Record<string, string> }[]) {
      assert.equal(s.sql.connectAddr, '127.0.0.1:54339');
      assert.equal(s.sql.user, 'temporal');
      assert.equal(s.sql.password, 'pw');
    }
    assert.equal(doc.services.frontend.rpc.grpcPort, 7400);
    assert.equal(doc.clusterMetadata.clusterInformation.active.rpcAddress, '127.0.0.1:7400');
    assert.deepEqual(doc.global.tls.frontend.server.clientCaFiles, [tls.caCert]);
    assert.equal(doc.global.tls.frontend.server.requireClientAuth, true);
    assert.equal(doc.global.tls.systemWorker.certFile, tls.clientCert);
    assert.equal(doc.global.metrics, undefined);
    assert.equal(doc.global.pprof.port, 0);
  });

  it('writes a client profile the SDK reads as mTLS to that address', () => {
    const profile = file('client.toml', clientProfileToml(cfg, tls));
    const clients = loadConfig({ HOME: dir, TEMPORAL_CONFIG_FILE: profile, TEMPORAL_PROFILE: 'stategrid' });
    assert.equal(clients.temporalAddress, '127.0.0.1:7400');
    assert.match(clients.temporal.summary, /mTLS/);
  });

  it("is picked up by the home's commands unless a TEMPORAL_* connection setting is given", () => {
    const home = path.join(dir, 'home');
    fs.mkdirSync(path.join(home, 'temporal-server'), { recursive: true });
    fs.writeFileSync(path.join(home, 'temporal-server', 'client.toml'), clientProfileToml(cfg, tls));
    const bare = loadConfig({ HOME: dir, STATEGRID_HOME: home });
    assert.equal(bare.temporalServer, 'server');
    assert.equal(bare.temporalFromStack, true);
    assert.equal(bare.temporalAddress, '127.0.0.1:7400');
    const chosen = loadConfig({ HOME: dir, STATEGRID_HOME: home, TEMPORAL_ADDRESS: '10.0.0.1:7233' });
    assert.equal(chosen.temporalFromStack, false);
    assert.equal(chosen.temporal.secured, false);
  });
});
