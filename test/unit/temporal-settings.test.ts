import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config';
import { loadTemporalSettings } from '../../src/temporal/settings';

/** Temporal connection settings: TOML profiles and TEMPORAL_* variables, failing fast and never leaking secrets. */
describe('Temporal connection settings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stategrid-envconfig-'));
  const file = (name: string, text: string) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  // No user config file: HOME points at an empty folder.
  const base = { HOME: dir };
  const SECRET = 'sk-very-secret-api-key';

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('defaults to the embedded dev server in plain text', () => {
    const s = loadTemporalSettings(base);
    assert.equal(s.address, '127.0.0.1:7233');
    assert.equal(s.namespace, 'default');
    assert.equal(s.secured, false);
    assert.equal(s.connection.tls, undefined);
  });

  it('reads a TOML profile chosen by TEMPORAL_PROFILE, variables overriding the file', () => {
    const config = file(
      'temporal.toml',
      `[profile.default]\naddress = "10.0.0.1:7233"\n\n[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\n` +
        `namespace = "ns.acct"\napi_key = "${SECRET}"\n`,
    );
    const cloud = loadTemporalSettings({ ...base, TEMPORAL_CONFIG_FILE: config, TEMPORAL_PROFILE: 'cloud' });
    assert.equal(cloud.address, 'ns.acct.tmprl.cloud:7233');
    assert.equal(cloud.namespace, 'ns.acct');
    assert.equal(cloud.connection.apiKey, SECRET);
    assert.equal(cloud.connection.tls, true, 'an API key implies TLS');
    assert.ok(cloud.secured);
    assert.ok(!cloud.summary.includes(SECRET), 'the summary names the API key, never its value');
    const overridden = loadTemporalSettings({
      ...base,
      TEMPORAL_CONFIG_FILE: config,
      TEMPORAL_ADDRESS: 'h:1',
    });
    assert.equal(overridden.address, 'h:1');
  });

  it('builds mTLS from certificate, key and CA paths', () => {
    const env = {
      ...base,
      TEMPORAL_TLS: 'true',
      TEMPORAL_TLS_CLIENT_CERT_PATH: file('client.pem', 'CERT'),
      TEMPORAL_TLS_CLIENT_KEY_PATH: file('client.key', 'KEY'),
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: file('ca.pem', 'CA'),
      TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
    };
    const s = loadTemporalSettings(env);
    assert.ok(s.secured);
    assert.match(s.summary, /mTLS/);
    const tls = s.connection.tls;
    assert.ok(tls && typeof tls === 'object');
    assert.equal(tls.serverNameOverride, 'temporal.internal');
    assert.equal(Buffer.from(tls.clientCertPair!.crt).toString(), 'CERT');
    assert.equal(Buffer.from(tls.serverRootCACertificate!).toString(), 'CA');
  });

  const failsNaming = (env: NodeJS.ProcessEnv, setting: string) => {
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (err: Error) => {
        assert.ok(err instanceof ConfigError, `a ConfigError, got ${err.name}`);
        assert.ok(err.message.includes(setting), `names ${setting}: ${err.message}`);
        assert.ok(!err.message.includes(SECRET), 'never prints the secret');
        return true;
      },
    );
  };

  it('fails fast naming the bad setting, without printing secrets', () => {
    failsNaming({ TEMPORAL_TLS: 'yes', TEMPORAL_API_KEY: SECRET }, 'TEMPORAL_TLS');
    failsNaming(
      { TEMPORAL_TLS_CLIENT_CERT_PATH: path.join(dir, 'missing.pem') },
      'TEMPORAL_TLS_CLIENT_CERT_PATH',
    );
    failsNaming(
      { TEMPORAL_TLS_CLIENT_CERT_PATH: file('only-cert.pem', 'C') },
      'TEMPORAL_TLS_CLIENT_KEY_PATH',
    );
    failsNaming({ TEMPORAL_ADDRESS: 'no-port', TEMPORAL_API_KEY: SECRET }, 'TEMPORAL_ADDRESS');
    failsNaming({ TEMPORAL_NAMESPACE: 'bad ns' }, 'TEMPORAL_NAMESPACE');
    failsNaming({ TEMPORAL_CONFIG_FILE: path.join(dir, 'none.toml') }, 'TEMPORAL_CONFIG_FILE');
    failsNaming(
      {
        TEMPORAL_CONFIG_FILE: file('p.toml', '[profile.default]\naddress = "a:1"\n'),
        TEMPORAL_PROFILE: 'prod',
      },
      'TEMPORAL_PROFILE',
    );
  });
});
