import assert from 'node:assert/strict';
import type { Change } from '../../src/cdc/changes';
import { withTransaction } from '../../src/db/client';
import { advanceDwsCursor, lockCheckpoint, readCheckpoint, resetCheckpoint } from '../../src/sink/checkpoint';
import {
  applyChangeBatch,
  applyConsumptionsAtCheckpoint,
  PgBatchSink,
  prepareConsumptions,
  StaleCaptureError,
} from '../../src/sink/writer';
import { TestContext } from './helpers/pipeline';

/**
 * The streaming fast path: a consumption batch prepared ahead of its write is applied, with the checkpoint check
 * and advance, in one statement. It must write only when the batch directly follows the checkpoint; anything
 * else (a replay, a stale capture) must change nothing and fall to the general path.
 */
describe('sink writer, one-statement batches', function () {
  this.timeout(60000);
  const t = new TestContext();
  const pipeline = 'writer_test';
  const firstId = 9_100_000_001;
  const txLsn = 0xff00000000n;

  const consumptions = (n: number, valid = true): Change[] =>
    Array.from({ length: n }, (_, i) => ({
      kind: 'row' as const,
      table: 'power_consumption' as const,
      op: 'I' as const,
      row: {
        consumption_id: String(firstId + i),
        user_id: '1',
        consumption_amount: valid ? '1.50' : '-1.00',
        consumption_cost: '0.75',
        consumption_date: '2026-11-20 10:00:00.000',
      },
      txLsn,
      seq: i + 1,
      commitTime: '2026-11-20 10:00:01+00',
    }));

  const cleanUp = async () => {
    await t.q(`DELETE FROM stategrid_checkpoint WHERE pipeline_id = $1`, [pipeline]);
    await t.q(`DELETE FROM stategrid_dws_cursor WHERE pipeline_id = $1`, [pipeline]);
    await t.q(`DELETE FROM ods_change_log WHERE commit_lsn = $1::pg_lsn`, ['FF/0']);
    await t.q(`DELETE FROM stategrid_dead_letter WHERE lsn = $1::pg_lsn`, ['FF/0']);
    for (const table of ['ods_power_consumption', 'dwd_power_consumption_detail'])
      await t.q(`DELETE FROM ${table} WHERE consumption_id >= $1 AND consumption_id < $1 + 1000`, [firstId]);
  };
  let epoch: string;
  beforeEach(async () => {
    await cleanUp();
    const { rows } = await t.db.query<{ epoch: string }>(
      `INSERT INTO stategrid_checkpoint (pipeline_id, slot_name, phase, epoch) VALUES ($1, 'none', 'streaming', 7)
       RETURNING epoch::text`,
      [pipeline],
    );
    epoch = rows[0].epoch;
  });
  after(async () => {
    await cleanUp();
    await t.close();
  });

  const counts = async () =>
    (
      await t.q<{ log: number; ods: number; dwd: number; dead: number; applied: string; commit_lsn: string }>(
        `SELECT (SELECT count(*) FROM ods_change_log WHERE commit_lsn = 'FF/0')::int AS log,
           (SELECT count(*) FROM ods_power_consumption WHERE consumption_id >= $2 AND consumption_id < $2 + 1000)::int AS ods,
           (SELECT count(*) FROM dwd_power_consumption_detail WHERE consumption_id >= $2 AND consumption_id < $2 + 1000)::int AS dwd,
           (SELECT count(*) FROM stategrid_dead_letter WHERE lsn = 'FF/0')::int AS dead,
           changes_applied::text AS applied, commit_lsn::text || '#' || seq AS commit_lsn
         FROM stategrid_checkpoint WHERE pipeline_id = $1`,
        [pipeline, firstId],
      )
    )[0];

  it('applies a batch that follows the checkpoint and advances it, in one statement', async () => {
    const changes = consumptions(3);
    const batch = prepareConsumptions(changes);
    assert.ok(batch);
    const result = await applyConsumptionsAtCheckpoint(t.db, pipeline, epoch, changes, batch, txLsn + 100n);
    assert.equal(result?.applied, 3);
    assert.deepEqual(await counts(), {
      log: 3,
      ods: 3,
      dwd: 3,
      dead: 0,
      applied: '3',
      commit_lsn: 'FF/0#3',
    });
    const cp = await t.q<{ confirmed: string }>(
      `SELECT confirmed_lsn::text AS confirmed FROM stategrid_checkpoint WHERE pipeline_id = $1`,
      [pipeline],
    );
    assert.equal(cp[0].confirmed, 'FF/64');
  });

  it('writes nothing for a replayed batch, which the general path then skips', async () => {
    const changes = consumptions(3);
    const batch = prepareConsumptions(changes);
    assert.ok(batch);
    assert.ok(await applyConsumptionsAtCheckpoint(t.db, pipeline, epoch, changes, batch, null));
    const before = await counts();
    assert.equal(await applyConsumptionsAtCheckpoint(t.db, pipeline, epoch, changes, batch, null), null);
    const replay = await withTransaction(t.db, (c) => applyChangeBatch(c, pipeline, epoch, changes, null));
    assert.equal(replay.skipped, 3);
    assert.equal(replay.applied, 0);
    assert.deepEqual(await counts(), before);
  });

  it('writes nothing for a stale capture, which the general path then stops', async () => {
    const changes = consumptions(2);
    const batch = prepareConsumptions(changes);
    assert.ok(batch);
    assert.equal(await applyConsumptionsAtCheckpoint(t.db, pipeline, '6', changes, batch, null), null);
    await assert.rejects(
      withTransaction(t.db, (c) => applyChangeBatch(c, pipeline, '6', changes, null)),
      StaleCaptureError,
    );
    assert.deepEqual(await counts(), { log: 0, ods: 0, dwd: 0, dead: 0, applied: '0', commit_lsn: '0/0#0' });
  });

  it('inserts new keys without conflict handling, and upserts when a key was there after all', async () => {
    const changes = consumptions(3);
    const batch = prepareConsumptions(changes);
    assert.equal(batch?.newKeys, true);
    const again = [...changes, { ...changes[0], seq: 4 }];
    assert.equal(prepareConsumptions(again)?.newKeys, false, 'a key inserted twice in one batch');
    const update = [{ ...changes[0], op: 'U' as const }];
    assert.equal(prepareConsumptions(update)?.newKeys, false, 'an update');
    // A repair wrote the first key before the stream's insert of it arrived.
    const values = `($1, 1, 9.99, 0.10, '2026-11-19 10:00:00')`;
    await t.q(
      `INSERT INTO ods_power_consumption (consumption_id, user_id, consumption_amount, consumption_cost,
         consumption_date, _lsn, _op) VALUES ${values.replace(')', ", 'FE/0', 'I')")}`,
      [firstId],
    );
    await t.q(
      `INSERT INTO dwd_power_consumption_detail (consumption_id, user_id, consumption_amount, consumption_cost,
         consumption_date) VALUES ${values}`,
      [firstId],
    );
    assert.ok(batch);
    assert.equal(
      (await applyConsumptionsAtCheckpoint(t.db, pipeline, epoch, changes, batch, null))?.applied,
      3,
    );
    assert.deepEqual(await counts(), { log: 3, ods: 3, dwd: 3, dead: 0, applied: '3', commit_lsn: 'FF/0#3' });
    const rows = await t.q<{ ods: string; dwd: string }>(
      `SELECT o.consumption_amount::text || ' ' || o.consumption_date::date AS ods,
         d.consumption_amount::text || ' ' || d.consumption_date::date AS dwd
       FROM ods_power_consumption o JOIN dwd_power_consumption_detail d USING (consumption_id)
       WHERE consumption_id = $1`,
      [firstId],
    );
    assert.deepEqual(rows, [{ ods: '1.50 2026-11-20', dwd: '1.50 2026-11-20' }]);
  });

  it('sends invalid rows to dead letters on the fast path too', async () => {
    const changes = consumptions(2, false);
    const batch = prepareConsumptions(changes);
    assert.ok(batch);
    assert.equal(
      (await applyConsumptionsAtCheckpoint(t.db, pipeline, epoch, changes, batch, null))?.deadLetters,
      2,
    );
    const c = await counts();
    assert.deepEqual([c.log, c.ods, c.dwd, c.dead], [2, 2, 0, 2]);
  });

  it('prepares only consumption-only batches', () => {
    const user: Change = {
      kind: 'row',
      table: 'power_user',
      op: 'I',
      row: {
        user_id: '1',
        user_name: 'a',
        usage_type: 'x',
        region_id: '1',
        region_name: 'r',
        update_time: null,
      },
      txLsn,
      seq: 9,
      commitTime: null,
    };
    assert.equal(prepareConsumptions([...consumptions(1), user]), null);
    assert.equal(
      prepareConsumptions([
        { kind: 'truncate', tables: ['power_consumption'], txLsn, seq: 1, commitTime: null },
      ]),
      null,
    );
    assert.equal(prepareConsumptions([]), null);
  });

  /** Changes `from`..`to` (1-based places in consumptions(to)) as the batch the capture cuts there. */
  const batchOf = (sink: PgBatchSink, from: number, to: number) =>
    sink.prepare({ changes: consumptions(to).slice(from - 1), endLsn: txLsn + 100n });

  it('writes a batch of new consumptions behind the batch in flight, committing only after it', async () => {
    const sink = new PgBatchSink(t.db, pipeline, epoch);
    const [first, second] = [batchOf(sink, 1, 3), batchOf(sink, 4, 6)];
    let settled = false;
    let behind: Promise<unknown> | undefined;
    const firstDone = withTransaction(t.db, async (client) => {
      await applyChangeBatch(client, pipeline, epoch, first.changes, null);
      behind = sink.applyBehind(second, first, firstDone, txLsn + 100n).finally(() => (settled = true));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(settled, false, 'the second batch waits for the first to commit');
      assert.deepEqual(await counts(), {
        log: 0,
        ods: 0,
        dwd: 0,
        dead: 0,
        applied: '0',
        commit_lsn: '0/0#0',
      });
    });
    await firstDone;
    assert.equal(((await behind) as { applied: number } | null)?.applied, 3);
    assert.deepEqual(await counts(), { log: 6, ods: 6, dwd: 6, dead: 0, applied: '6', commit_lsn: 'FF/0#6' });
  });

  it('writes nothing behind a batch that rolled back, or one the checkpoint does not end at', async () => {
    const sink = new PgBatchSink(t.db, pipeline, epoch);
    const [first, second] = [batchOf(sink, 1, 3), batchOf(sink, 4, 6)];
    let behind: Promise<unknown> | undefined;
    const firstDone: Promise<unknown> = withTransaction(t.db, async (client) => {
      await applyChangeBatch(client, pipeline, epoch, first.changes, null);
      behind = sink.applyBehind(
        second,
        first,
        firstDone.catch(() => undefined),
        null,
      );
      await new Promise((r) => setTimeout(r, 300));
      throw new Error('the first batch fails');
    });
    await assert.rejects(firstDone, /the first batch fails/);
    assert.equal(await behind, null);
    assert.deepEqual(await counts(), { log: 0, ods: 0, dwd: 0, dead: 0, applied: '0', commit_lsn: '0/0#0' });
    // Behind a batch that never reached the sink: the checkpoint is not where that batch ends.
    assert.equal(await sink.applyBehind(second, first, Promise.resolve(), null), null);
    assert.deepEqual(await counts(), { log: 0, ods: 0, dwd: 0, dead: 0, applied: '0', commit_lsn: '0/0#0' });
  });

  it('writes behind only a batch of new consumptions after another', async () => {
    const sink = new PgBatchSink(t.db, pipeline, epoch);
    const inserts = batchOf(sink, 1, 3);
    const update = sink.prepare({
      changes: [{ ...consumptions(4)[3], op: 'U' } as Change],
      endLsn: txLsn + 100n,
    });
    assert.equal(await sink.applyBehind(update, inserts, Promise.resolve(), null), null);
    assert.equal(await sink.applyBehind(inserts, update, Promise.resolve(), null), null);
    assert.deepEqual(await counts(), { log: 0, ods: 0, dwd: 0, dead: 0, applied: '0', commit_lsn: '0/0#0' });
  });

  it('keeps the DWS cursor beside the checkpoint: never waits for a batch, never moves back, per epoch', async () => {
    const dwsLsn = async () => (await readCheckpoint(t.db, pipeline))!.dws_lsn;
    assert.equal(await dwsLsn(), '0/0');
    // A batch holds the checkpoint row for its whole transaction; the refresh's cursor write goes past it.
    await withTransaction(t.db, async (batch) => {
      await lockCheckpoint(batch, pipeline);
      await withTransaction(t.db, async (refresh) => {
        await refresh.query(`SET LOCAL lock_timeout = '2s'`);
        await advanceDwsCursor(refresh, pipeline, epoch, 'FF/10');
      });
    });
    assert.equal(await dwsLsn(), 'FF/10');
    await advanceDwsCursor(t.db, pipeline, epoch, 'FF/8');
    assert.equal(await dwsLsn(), 'FF/10', 'the cursor never moves back');
    // A new epoch starts at 0/0; a refresh of the old epoch still running changes nothing of it.
    const next = await resetCheckpoint(t.db, pipeline, 'snapshot');
    assert.equal(await dwsLsn(), '0/0');
    await advanceDwsCursor(t.db, pipeline, epoch, 'FF/20');
    assert.equal(await dwsLsn(), '0/0');
    await advanceDwsCursor(t.db, pipeline, next, '1/0');
    assert.equal(await dwsLsn(), '1/0');
  });

  it('logs changes to both tables and truncates with their table, op, old key and transaction', async () => {
    const [insert, moved] = consumptions(2);
    const commitTime = '2026-11-20 10:00:01+00';
    const user: Change = {
      kind: 'row',
      table: 'power_user',
      op: 'U',
      row: {
        user_id: String(firstId),
        user_name: 'log test',
        usage_type: 'resident',
        region_id: '1',
        region_name: 'r',
        update_time: null,
      },
      oldKey: String(firstId + 1),
      txLsn,
      seq: 3,
      commitTime,
    };
    const tables = ['power_user', 'power_consumption'] as const;
    const changes: Change[] = [
      insert,
      { ...moved, op: 'U', oldKey: String(firstId + 500) } as Change,
      user,
      { kind: 'truncate', tables: [...tables], txLsn: txLsn + 0x10n, seq: 1, commitTime: null },
    ];
    // The truncate empties the ODS and DWD tables: the whole batch is rolled back once its log is read.
    const client = await t.db.connect();
    let logged: unknown[];
    try {
      await client.query('BEGIN');
      await applyChangeBatch(client, pipeline, epoch, changes, null);
      ({ rows: logged } = await client.query(
        `SELECT commit_lsn::text AS lsn, seq, table_name, op, row_data, old_key, commit_time
         FROM ods_change_log WHERE commit_lsn BETWEEN 'FF/0' AND 'FF/10' ORDER BY commit_lsn, seq`,
      ));
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    const rowOf = (c: Change) => (c.kind === 'row' ? c.row : null);
    assert.deepEqual(logged, [
      {
        lsn: 'FF/0',
        seq: 1,
        table_name: 'power_consumption',
        op: 'I',
        row_data: rowOf(insert),
        old_key: null,
        commit_time: commitTime,
      },
      {
        lsn: 'FF/0',
        seq: 2,
        table_name: 'power_consumption',
        op: 'U',
        row_data: rowOf(moved),
        old_key: { consumption_id: String(firstId + 500) },
        commit_time: commitTime,
      },
      {
        lsn: 'FF/0',
        seq: 3,
        table_name: 'power_user',
        op: 'U',
        row_data: user.row,
        old_key: { user_id: String(firstId + 1) },
        commit_time: commitTime,
      },
      {
        lsn: 'FF/10',
        seq: 1,
        table_name: tables.join(','),
        op: 'T',
        row_data: { tables },
        old_key: null,
        commit_time: null,
      },
    ]);
  });
});
