import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { portOpen } from '../../src/stack/proc';
import { REPO_ROOT } from './setup/env';
import { TestContext } from './helpers/pipeline';

/**
 * Infrastructure the stack did not start: a home whose source/sink URLs point at a PostgreSQL cluster already
 * running on its port and whose Temporal address answers already. `stack up` starts only the worker, `stack
 * status` calls the rest external, and `stack down` leaves that cluster and server running.
 */
describe('stack up beside infrastructure it did not start', function () {
  this.timeout(180000);
  const t = new TestContext();
  before(() => t.open());
  after(() => t.close());

  it('starts only the worker and never stops the external cluster or server', async () => {
    const home = path.join(t.cfg.home, 'external-stack');
    fs.rmSync(home, { recursive: true, force: true });
    const env = {
      ...process.env,
      STATEGRID_HOME: home,
      STATEGRID_SOURCE_URL: t.cfg.sourceUrl,
      STATEGRID_TASK_QUEUE: 'stategrid-external-stack',
      STATEGRID_METRICS_PORT: '0',
    };
    const stategrid = (...args: string[]) => {
      const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'stategrid.js'), ...args], {
        encoding: 'utf8',
        env,
        timeout: 120000,
      });
      assert.equal(r.status, 0, `stategrid ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
      return r.stdout;
    };
    assert.match(stategrid('stack', 'up'), /postgres: external/);
    assert.ok(!fs.existsSync(path.join(home, 'pgdata')), 'no cluster of its own was created');
    const status = JSON.parse(stategrid('stack', 'status', '--json')) as {
      postgres: { external: boolean; up: boolean };
      temporal: { external: boolean; up: boolean };
      worker: { up: boolean; pollers: number };
    };
    assert.deepEqual(
      [
        status.postgres.external,
        status.postgres.up,
        status.temporal.external,
        status.temporal.up,
        status.worker.up,
      ],
      [true, true, true, true, true],
    );
    stategrid('stack', 'down');
    assert.ok(await portOpen(t.cfg.pgPort), 'the external cluster still runs');
    assert.equal((await t.q<{ n: number }>('SELECT 1 AS n'))[0].n, 1);
    assert.ok(
      await portOpen(Number(t.cfg.temporalAddress.split(':')[1])),
      'the external Temporal still runs',
    );
  });
});
