import assert from 'node:assert/strict';
import path from 'node:path';
import { readPid } from '../../src/stack/proc';
import { stackUp } from '../../src/stack';
import { pipelineTestContext } from './helpers/pipeline';

/**
 * Crash recovery against the real stack: kill -9 of the worker process or of the Temporal server in the middle of a
 * 100,000-row stream of small source transactions. Afterwards every layer equals the source and the change log
 * holds each change exactly once.
 */
const ROWS = 100_000;
const PER_TX = 50;

describe('exactly-once recovery after kill -9', function () {
  this.timeout(600000);
  const t = pipelineTestContext();

  async function streamSmallTransactions(): Promise<void> {
    for (let start = 1; start <= ROWS; start += PER_TX) {
      await t.q(
        `INSERT INTO power_consumption SELECT g, 1 + g % 3, (g % 1000) / 100.0, (g % 700) / 100.0,
           '2026-11-20'::timestamp + make_interval(secs => g % 172800)
         FROM generate_series($1::bigint, $2::bigint) g`,
        [start, start + PER_TX - 1],
      );
    }
  }

  async function killMidStream(name: 'worker' | 'temporal'): Promise<void> {
    await t.freshPipeline({ batchRows: 2000 }, async () => {
      await t.q(`INSERT INTO power_user VALUES (1, 'a', '居民用电', 1, '北京', now()), (2, 'b', '商业用电', 1, '北京', now()),
        (3, 'c', '工业用电', 2, '上海', now())`);
    });
    const writing = streamSmallTransactions();
    await t.waitFor(
      'a tenth of the stream applied',
      async () => {
        const r = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM ods_power_consumption`);
        return r[0].n >= ROWS / 10;
      },
      120000,
    );
    const pid = readPid(path.join(t.cfg.home, 'run', `${name}.pid`));
    assert.ok(pid, `${name} pid file`);
    process.kill(pid, 'SIGKILL');
    const applied = await t.q<{ n: number }>(`SELECT count(*)::int AS n FROM ods_power_consumption`);
    assert.ok(applied[0].n < ROWS, 'the kill happened mid-stream');
    await writing;
    await stackUp(t.cfg, () => undefined);
    await t.caughtUp(300000);
    await t.assertConverged();
    const log = await t.q<{ n: number; d: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT row_data->>'consumption_id')::int AS d FROM ods_change_log
       WHERE table_name = 'power_consumption'`,
    );
    assert.deepEqual(log[0], { n: ROWS, d: ROWS }, 'each change logged exactly once');
  }

  it('kill -9 of the worker, then stack up', () => killMidStream('worker'));
  it('kill -9 of the Temporal server, then stack up', () => killMidStream('temporal'));
});
