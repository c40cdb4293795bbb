import type pg from 'pg';
import { formatLsn, parseLsn, PRIMARY_KEY, type Change, type Row, type SourceTable } from '../cdc/changes';
import { invalidReason } from '../cdc/validate';
import * as dwd from './dwd';
import * as ods from './ods';
import * as ops from './ops';

/** Sink writer: applies a batch of changes to ODS, change log, DWD, dead letters and checkpoint in one transaction. */

export type CheckpointRow = {
  pipeline_id: string;
  slot_name: string;
  phase: string;
  epoch: string;
  commit_lsn: string;
  seq: number;
  confirmed_lsn: string;
  dws_lsn: string;
  snapshot_rows: string;
  changes_applied: string;
  max_event_time: string | null;
};

export type BatchResult = {
  applied: number;
  skipped: number;
  deadLetters: number;
  perTable: Record<SourceTable, number>;
  maxEventTime: string | null;
  days: string[];
};

export class StaleCaptureError extends Error {
  constructor(pipelineId: string, mine: string, current: string) {
    super(
      `capture of pipeline ${pipelineId} epoch ${mine} is stale (checkpoint is at epoch ${current}); stopping`,
    );
    this.name = 'StaleCaptureError';
  }
}

/** Last state of a key in the batch (row null = deleted); validity is decided once, when the change is read. */
type FinalState = { row: Row | null; op: string; lsn: bigint; valid: boolean };

/** Last state per primary key: set-based statements may touch each key only once. */
type TableState = Map<string, FinalState>;

const isAfter = (c: Change, lsn: bigint, seq: number) => c.txLsn > lsn || (c.txLsn === lsn && c.seq > seq);

export async function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  // A connection lost while checked out is reported by the failing query; without a listener the client's
  // 'error' event would crash the worker instead.
  const ignore = () => undefined;
  client.on('error', ignore);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => (broken = e));
    throw err;
  } finally {
    client.removeListener('error', ignore);
    client.release(broken); // a broken connection is destroyed, not returned to the pool
  }
}

/**
 * Applies `changes` (in source order) for pipeline `pipelineId`. Changes at or before the checkpoint are skipped,
 * so a batch replayed after a crash applies nothing twice. `confirmLsn` is the slot position the batch completes
 * (the commit end of its last whole transaction), or null when it ends inside a transaction.
 */
export async function applyChangeBatch(
  client: pg.ClientBase,
  pipelineId: string,
  epoch: string,
  changes: Change[],
  confirmLsn: bigint | null,
): Promise<BatchResult> {
  const { rows } = await client.query<CheckpointRow>(ops.LOCK_CHECKPOINT, [pipelineId]);
  if (!rows.length) throw new Error(`no checkpoint row for pipeline ${pipelineId}`);
  if (rows[0].epoch !== epoch || rows[0].phase !== 'streaming') {
    throw new StaleCaptureError(pipelineId, epoch, rows[0].epoch);
  }
  const cpLsn = parseLsn(rows[0].commit_lsn);
  const cpSeq = rows[0].seq;
  const fresh = changes.filter((c) => isAfter(c, cpLsn, cpSeq));
  const result = emptyResult(changes.length - fresh.length);
  if (fresh.length) {
    let start = 0;
    for (let i = 0; i <= fresh.length; i++) {
      const c = fresh[i];
      if (i === fresh.length || c.kind === 'truncate') {
        await applyRowSegment(client, fresh.slice(start, i), result);
        if (c && c.kind === 'truncate') {
          await client.query(ods.INSERT_CHANGE_LOG, [changeLogJson([c])]);
          await applyTruncate(client, c.tables);
          result.applied += 1;
        }
        start = i + 1;
      }
    }
    const last = fresh[fresh.length - 1];
    await client.query(ops.ADVANCE_CHECKPOINT, [
      pipelineId,
      formatLsn(last.txLsn),
      last.seq,
      confirmLsn === null ? null : formatLsn(confirmLsn),
      fresh.length,
      result.maxEventTime,
    ]);
  } else if (confirmLsn !== null) {
    await client.query(ops.CONFIRM_IDLE_POSITION, [pipelineId, formatLsn(confirmLsn)]);
  }
  return result;
}

/**
 * Applies a prepared batch as one autocommit statement that also checks and advances the checkpoint: one round
 * trip instead of five. Returns null, having changed nothing, when the batch does not directly follow the
 * checkpoint (a replay, a stale capture); the caller then takes applyChangeBatch's general path.
 */
export async function applyPreparedBatch(
  pool: pg.Pool,
  pipelineId: string,
  epoch: string,
  batch: PreparedBatch,
  confirmLsn: bigint | null,
): Promise<BatchResult | null> {
  const first = batch.changes[0];
  const last = batch.changes[batch.changes.length - 1];
  const { rows } = await pool.query<{ ok: boolean }>(dwd.APPLY_CONSUMPTIONS_AT_CHECKPOINT, [
    ...batch.params,
    pipelineId,
    epoch,
    formatLsn(first.txLsn),
    first.seq,
    formatLsn(last.txLsn),
    last.seq,
    confirmLsn === null ? null : formatLsn(confirmLsn),
    batch.changes.length,
    batch.result.maxEventTime,
  ]);
  return rows[0].ok ? batch.result : null;
}

/** A consumption-only batch with its statement parameters built ahead of the write. */
export type PreparedBatch = { changes: Change[]; params: unknown[]; result: BatchResult };

/**
 * Builds the one-statement parameters of a batch that touches only consumptions (the common streaming case),
 * so the capture can do it while the previous batch is in the sink; null for other batches.
 */
export function prepareBatch(changes: Change[]): PreparedBatch | null {
  if (!changes.length || changes.some((c) => c.kind !== 'row' || c.table !== 'power_consumption'))
    return null;
  const result = emptyResult(0);
  const { states, deadLetters } = summarizeRows(changes, result);
  return { changes, params: consumptionParams(changes, states.power_consumption, deadLetters), result };
}

function emptyResult(skipped: number): BatchResult {
  return {
    applied: 0,
    skipped,
    deadLetters: 0,
    perTable: { power_user: 0, power_consumption: 0 },
    maxEventTime: null,
    days: [],
  };
}

function changeLogJson(changes: Change[]): string {
  const lsnText = lastLsnText();
  const entries = changes.map((c) => ({
    l: lsnText(c.txLsn),
    s: c.seq,
    t: c.kind === 'row' ? c.table : c.tables.join(','),
    o: c.kind === 'row' ? c.op : 'T',
    r: c.kind === 'row' ? c.row : { tables: c.tables },
    k: c.kind === 'row' && c.oldKey !== undefined ? { [PRIMARY_KEY[c.table]]: c.oldKey } : null,
    c: c.commitTime,
  }));
  return JSON.stringify(entries);
}

/** Final state per key and dead letters of a run of row changes; counts them into `result`. */
function summarizeRows(
  changes: Change[],
  result: BatchResult,
): { states: Record<SourceTable, TableState>; deadLetters: object[] } {
  const states: Record<SourceTable, TableState> = { power_user: new Map(), power_consumption: new Map() };
  const deadLetters: object[] = [];
  const days = new Set(result.days);
  for (const c of changes) {
    if (c.kind !== 'row') continue;
    const pk = PRIMARY_KEY[c.table];
    const key = c.row[pk];
    if (key === null || key === undefined) throw new Error(`change without primary key on ${c.table}`);
    const deleted: FinalState = { row: null, op: 'D', lsn: c.txLsn, valid: false };
    if (c.oldKey !== undefined) states[c.table].set(c.oldKey, deleted);
    if (c.op === 'D') {
      states[c.table].set(key, deleted);
    } else {
      const reason = invalidReason(c.table, c.row);
      states[c.table].set(key, { row: c.row, op: c.op, lsn: c.txLsn, valid: !reason });
      if (reason) {
        deadLetters.push({
          t: c.table,
          k: key,
          r: c.row,
          reason,
          l: formatLsn(c.txLsn),
          s: c.seq,
        });
      } else if (c.table === 'power_consumption') {
        const eventTime = c.row.consumption_date as string;
        if (result.maxEventTime === null || eventTime > result.maxEventTime) result.maxEventTime = eventTime;
        days.add(eventTime.slice(0, 10));
      }
    }
    result.perTable[c.table] += 1;
    result.applied += 1;
  }
  result.days = [...days];
  result.deadLetters += deadLetters.length;
  return { states, deadLetters };
}

/** Parameters of dwd.APPLY_CONSUMPTIONS. */
function consumptionParams(changes: Change[], state: TableState, deadLetters: object[]): unknown[] {
  const consumptions = split(state);
  return [
    changeLogJson(changes),
    jsonArray(consumptions.upserts),
    consumptions.deletes,
    consumptions.gone,
    [...state.keys()],
    JSON.stringify(deadLetters),
  ];
}

async function applyRowSegment(client: pg.ClientBase, changes: Change[], result: BatchResult): Promise<void> {
  if (!changes.length) return;
  const { states, deadLetters } = summarizeRows(changes, result);
  if (states.power_user.size === 0) {
    // The common streaming case: one statement and one round trip for the whole batch.
    await client.query(
      dwd.APPLY_CONSUMPTIONS,
      consumptionParams(changes, states.power_consumption, deadLetters),
    );
    return;
  }

  await client.query(ods.INSERT_CHANGE_LOG, [changeLogJson(changes)]);
  if (deadLetters.length) await client.query(ops.INSERT_DEAD_LETTERS, [JSON.stringify(deadLetters)]);

  const users = split(states.power_user);
  const consumptions = split(states.power_consumption);
  const touchedUsers = [...states.power_user.keys()];
  const touchedConsumptions = [...states.power_consumption.keys()];

  // ODS: raw current state, valid or not.
  if (users.upserts.length) await client.query(ods.UPSERT_ODS_USERS, [jsonArray(users.upserts)]);
  if (users.deletes.length) await client.query(ods.DELETE_ODS_USERS, [users.deletes]);
  if (consumptions.upserts.length) {
    await client.query(ods.UPSERT_ODS_CONSUMPTIONS, [jsonArray(consumptions.upserts)]);
  }
  if (consumptions.deletes.length) await client.query(ods.DELETE_ODS_CONSUMPTIONS, [consumptions.deletes]);

  // DWS partitions the old DWD rows belonged to, before DWD changes.
  await client.query(dwd.MARK_DIRTY_FOR_KEYS, [touchedConsumptions, touchedUsers]);

  // DWD: valid rows in, invalid or deleted rows out.
  if (users.valid.length) await client.query(dwd.UPSERT_DWD_USERS, [jsonArray(users.valid)]);
  if (users.gone.length) await client.query(dwd.DELETE_DWD_USERS, [users.gone]);
  if (consumptions.gone.length) await client.query(dwd.DELETE_DWD_DETAILS, [consumptions.gone]);
  if (consumptions.valid.length) {
    await client.query(dwd.UPSERT_DWD_DETAILS, [jsonArray(consumptions.valid)]);
  }
  if (touchedUsers.length) {
    await client.query(dwd.REENRICH_DETAILS_OF_USERS, [touchedUsers]);
  }

  // DWS partitions the new DWD rows belong to.
  await client.query(dwd.MARK_DIRTY_FOR_KEYS, [touchedConsumptions, touchedUsers]);
}

/**
 * Splits final states into ODS writes (every row, valid or not, and deleted keys) and DWD writes (valid rows in;
 * deleted or invalid keys out). Rows are JSON text: the source row plus _lsn, _op and _valid, written out
 * directly (copying each row into a new object cost three times as much on a streaming batch).
 */
function split(state: TableState): { upserts: string[]; deletes: string[]; valid: string[]; gone: string[] } {
  const out = {
    upserts: [] as string[],
    deletes: [] as string[],
    valid: [] as string[],
    gone: [] as string[],
  };
  const lsnText = lastLsnText();
  for (const [key, s] of state) {
    if (s.row === null) {
      out.deletes.push(key);
      out.gone.push(key);
      continue;
    }
    const body = JSON.stringify(s.row);
    const row = `${body.length > 2 ? body.slice(0, -1) + ',' : '{'}"_lsn":"${lsnText(s.lsn)}","_op":${JSON.stringify(s.op)},"_valid":${s.valid}}`;
    out.upserts.push(row);
    if (s.valid) out.valid.push(row);
    else out.gone.push(key);
  }
  return out;
}

const jsonArray = (items: string[]) => `[${items.join(',')}]`;

/** formatLsn remembering its last answer: the changes of one transaction share their LSN. */
function lastLsnText(): (lsn: bigint) => string {
  let last = -1n;
  let text = '';
  return (lsn) => (lsn === last ? text : ((last = lsn), (text = formatLsn(lsn))));
}

async function applyTruncate(client: pg.ClientBase, tables: SourceTable[]): Promise<void> {
  await client.query(dwd.MARK_ALL_DIRTY);
  if (tables.includes('power_consumption')) {
    await client.query(ods.TRUNCATE_ODS_CONSUMPTIONS);
    await client.query(dwd.TRUNCATE_DWD_DETAILS);
  }
  if (tables.includes('power_user')) {
    await client.query(ods.TRUNCATE_ODS_USERS);
    await client.query(dwd.TRUNCATE_DWD_USERS);
    await client.query(dwd.DETACH_ALL_DETAILS_FROM_USERS);
  }
}
