import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Files of the local certificate authority that `--temporal server` uses for mTLS on its frontend. */
export type MtlsFiles = {
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** The name the server certificate is issued for; clients verify it (TEMPORAL_TLS_SERVER_NAME). */
  serverName: string;
};

const SERVER_NAME = 'localhost';
const DAYS = '825'; // the longest validity TLS clients accept for leaf certificates

/** `openssl req` arguments of a self-signed certificate (a CA, or a server certificate with alternative names). */
export function selfSignedArgs(
  subject: string,
  keyOut: string,
  certOut: string,
  altNames?: string,
): string[] {
  const args = [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '3650',
    '-sha256',
    '-subj',
    subject,
  ];
  if (altNames) args.push('-addext', `subjectAltName=${altNames}`);
  return [...args, '-keyout', keyOut, '-out', certOut];
}

function openssl(args: string[], cwd: string): void {
  const res = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (res.error) throw new Error(`openssl is required for --temporal server (mTLS): ${res.error.message}`);
  if (res.status !== 0) throw new Error(`openssl ${args[0]} failed: ${(res.stderr || '').trim()}`);
}

/** A leaf key and certificate signed by the CA; `usage` is serverAuth or clientAuth. */
function issue(dir: string, name: string, subject: string, usage: string, altNames?: string): void {
  const ext = path.join(dir, `${name}.ext`);
  const lines = [
    'basicConstraints=CA:FALSE',
    'keyUsage=digitalSignature,keyEncipherment',
    `extendedKeyUsage=${usage}`,
  ];
  if (altNames) lines.push(`subjectAltName=${altNames}`);
  fs.writeFileSync(ext, lines.join('\n') + '\n');
  openssl(
    [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      subject,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
    ],
    dir,
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      DAYS,
      '-sha256',
      '-extfile',
      ext,
      '-out',
      `${name}.crt`,
    ],
    dir,
  );
  fs.rmSync(path.join(dir, `${name}.csr`));
  fs.rmSync(ext);
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
}

/**
 * A private CA, a server certificate for 127.0.0.1/localhost and one client certificate, made once with openssl
 * and kept under `dir`. Only clients holding a certificate of this CA get past the frontend.
 */
export function ensureMtlsCertificates(dir: string): MtlsFiles {
  const files: MtlsFiles = {
    caCert: path.join(dir, 'ca.crt'),
    serverCert: path.join(dir, 'server.crt'),
    serverKey: path.join(dir, 'server.key'),
    clientCert: path.join(dir, 'client.crt'),
    clientKey: path.join(dir, 'client.key'),
    serverName: SERVER_NAME,
  };
  if (fs.existsSync(files.clientCert)) return files;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  openssl(selfSignedArgs('/CN=stategrid-cdc local CA', 'ca.key', 'ca.crt'), dir);
  fs.chmodSync(path.join(dir, 'ca.key'), 0o600);
  issue(dir, 'server', `/CN=${SERVER_NAME}`, 'serverAuth', `DNS:${SERVER_NAME},IP:127.0.0.1`);
  issue(dir, 'client', '/CN=stategrid-worker', 'clientAuth');
  return files;
}
