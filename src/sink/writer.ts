import type pg from 'pg';
import {
  emptyBatchResult,
  formatLsn,
  parseLsn,
  PRIMARY_KEY,
  type BatchResult,
  type Change,
  type Row,
  type RowChange,
  type SourceTable,
} from '../cdc/changes';
import type { BatchSink, ChangeBatch } from '../cdc/ports';
import { invalidReason } from '../cdc/validate';
import { withTransaction } from '../db/client';
import { boundQuery } from '../db/sql';
import {
  ADVANCE_CHECKPOINT_AFTER,
  advanceCheckpoint,
  confirmIdlePosition,
  lockCheckpoint,
} from './checkpoint';
import * as dwd from './dwd';
import * as ods from './ods';
import {
  evolveOdsColumns,
  noColumnLog,
  readOdsExtras,
  type ColumnLog,
  type ExtraColumn,
  type OdsExtras,
} from './ods-columns';
import * as ops from './ops';

/** The batch sink: applies a batch of changes to ODS, change log, DWD, dead letters and checkpoint in one transaction. */

export class StaleCaptureError extends Error {
  constructor(pipelineId: string, mine: string, current: string) {
    super(
      `capture of pipeline ${pipelineId} epoch ${mine} is stale (checkpoint is at epoch ${current}); stopping`,
    );
    this.name = 'StaleCaptureError';
  }
}

/**
 * A batch with the one-statement parameters of a consumption-only batch built ahead of the write (or null), and
 * whether it carries new column lists (then it takes the general path, which evolves the ODS tables first).
 */
export type PreparedBatch = {
  changes: Change[];
  consumptions: PreparedConsumptions | null;
  newColumns: boolean;
};
/** `newKeys`: every change inserts a key no other change of the batch touches (see dwd.applyConsumptionsSql). */
export type PreparedConsumptions = {
  params: dwd.ConsumptionBatchParams;
  result: BatchResult;
  newKeys: boolean;
};

/** The sink of one pipeline's capture, fenced by the checkpoint epoch it was started with. */
export class PgBatchSink implements BatchSink<PreparedBatch> {
  /** The ODS columns beyond the spec: read at the first batch, again after a batch that changed them. */
  private extras: OdsExtras | null = null;

  constructor(
    private readonly pool: pg.Pool,
    private readonly pipelineId: string,
    private readonly epoch: string,
    private readonly log: ColumnLog = noColumnLog,
  ) {}

  prepare(batch: ChangeBatch): PreparedBatch {
    const newColumns = !!batch.newColumns;
    return {
      changes: batch.changes,
      consumptions: newColumns ? null : prepareConsumptions(batch.changes),
      newColumns,
    };
  }

  async apply(batch: PreparedBatch, confirmLsn: bigint | null): Promise<BatchResult> {
    const extras = (this.extras ??= await readOdsExtras(this.pool));
    // The prepared statement is the whole transaction when the batch continues the checkpoint; otherwise (a
    // replay after a crash, a stale capture) the general path filters and checks.
    if (batch.consumptions) {
      const applied = await applyConsumptionsAtCheckpoint(
        this.pool,
        this.pipelineId,
        this.epoch,
        batch.changes,
        batch.consumptions,
        confirmLsn,
        extras.power_consumption,
      );
      if (applied) return applied;
    }
    if (batch.newColumns) this.extras = null;
    return withTransaction(this.pool, (client) =>
      applyChangeBatch(client, this.pipelineId, this.epoch, batch.changes, confirmLsn, {
        extras,
        newColumns: batch.newColumns,
        log: this.log,
      }),
    );
  }

  /**
   * Writes a batch of new consumptions while the batch before it (`previous`, new consumptions too) is still in
   * the sink, in a transaction of its own: the two touch disjoint keys (a key inserted twice needs a delete
   * between, which neither holds), no user, and their DWS deltas add up in any order. Once its rows are written it
   * waits for `previousDone` and commits only if the checkpoint then ends where `previous` ends; otherwise it
   * writes nothing and returns null (the caller applies the batch after `previous`, as usual).
   */
  async applyBehind(
    batch: PreparedBatch,
    previous: PreparedBatch,
    previousDone: Promise<unknown>,
    confirmLsn: bigint | null,
  ): Promise<BatchResult | null> {
    const prepared = batch.consumptions;
    if (!prepared?.newKeys || !previous.consumptions?.newKeys) return null;
    const extras = (this.extras ??= await readOdsExtras(this.pool));
    const after = previous.changes[previous.changes.length - 1];
    const values = {
      ...checkpointValues(this.pipelineId, this.epoch, batch.changes, prepared, confirmLsn),
      after_lsn: formatLsn(after.txLsn),
      after_seq: after.seq,
    };
    try {
      return await withTransaction(this.pool, async (client) => {
        await client.query(boundQuery(dwd.consumptionStatements(extras.power_consumption).newKeys, values));
        await previousDone;
        const advanced = await client.query(boundQuery(ADVANCE_CHECKPOINT_AFTER, values));
        if (!advanced.rowCount) throw new NotBehindError();
        return prepared.result;
      });
    } catch (err) {
      // Rolled back: `previous` failed or left the checkpoint elsewhere, a key was there already (a repair), or a
      // repair holding the checkpoint waited for a key this batch had inserted.
      const code = (err as { code?: string }).code;
      if (err instanceof NotBehindError || code === UNIQUE_VIOLATION || code === DEADLOCK) return null;
      throw err;
    }
  }
}

class NotBehindError extends Error {}

/** How applyChangeBatch writes ODS: its extra columns (read from the sink if not given), and column changes. */
export type OdsOptions = { extras?: OdsExtras; newColumns?: boolean; log?: ColumnLog };

/**
 * Last state of a key in the batch (row null = deleted); validity is decided once, when the change is read. `at`:
 * the place of the change that left the row among the changes summarized (its change log entry). An update's
 * row lacks the values its source did not send (see RowChange); where an earlier change of the batch had them,
 * the row is that change's row updated (`merged`: the change log entry alone no longer gives it), and `odsKey`
 * names the key whose ODS row holds the rest when it is not the row's own (the key changed).
 */
type FinalState = {
  row: Row | null;
  op: string;
  lsn: bigint;
  valid: boolean;
  at: number;
  merged?: true;
  odsKey?: string;
};

/** Last state per primary key: set-based statements may touch each key only once. */
type TableState = Map<string, FinalState>;

/**
 * What a final state does to the layers, the one rule both batch paths follow: a deleted key leaves ODS and DWD; a
 * present row is written to ODS and enters DWD only when valid (an invalid one leaves DWD).
 */
const fateOf = (s: FinalState): 'deleted' | 'valid' | 'invalid' =>
  s.row === null ? 'deleted' : s.valid ? 'valid' : 'invalid';

const isAfter = (c: Change, lsn: bigint, seq: number) => c.txLsn > lsn || (c.txLsn === lsn && c.seq > seq);

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
  odsOptions: OdsOptions = {},
): Promise<BatchResult> {
  const cp = await lockCheckpoint(client, pipelineId);
  if (cp.epoch !== epoch || cp.phase !== 'streaming')
    throw new StaleCaptureError(pipelineId, epoch, cp.epoch);
  const cpLsn = parseLsn(cp.commit_lsn);
  const fresh = changes.filter((c) => isAfter(c, cpLsn, cp.seq));
  const result = emptyBatchResult(changes.length - fresh.length);
  const confirmed = confirmLsn === null ? null : formatLsn(confirmLsn);
  if (!fresh.length) {
    if (confirmed !== null) await confirmIdlePosition(client, pipelineId, confirmed);
    return result;
  }
  // Set-based statements per run of row changes; a TRUNCATE in between is applied where it stands, and so is a
  // column list (only fresh ones count: those at or before the checkpoint were applied with their changes): the
  // changes before it wrote rows the source had without its new columns, which then take their defaults in ODS
  // as they do at the source.
  const log = odsOptions.log ?? noColumnLog;
  let extras = odsOptions.extras ?? (await readOdsExtras(client));
  let start = 0;
  for (let i = 0; i <= fresh.length; i++) {
    const c = fresh[i];
    const columns = odsOptions.newColumns && c?.kind === 'row' ? c.columns : undefined;
    if (i < fresh.length && c.kind !== 'truncate' && !columns) continue;
    await applyRowSegment(client, fresh.slice(start, i), result, extras);
    if (columns && c.kind === 'row') {
      await evolveOdsColumns(client, c.table, columns, log);
      extras = await readOdsExtras(client);
      start = i;
      continue;
    }
    if (c?.kind === 'truncate') {
      await client.query(boundQuery(ods.INSERT_CHANGE_LOG, changeLogParams([c], true)));
      await applyTruncate(client, c.tables);
      result.applied += 1;
    }
    start = i + 1;
  }
  const last = fresh[fresh.length - 1];
  await advanceCheckpoint(client, {
    pipeline_id: pipelineId,
    commit_lsn: formatLsn(last.txLsn),
    seq: last.seq,
    confirmed_lsn: confirmed,
    changes: fresh.length,
    max_event_time: result.maxEventTime,
  });
  return result;
}

/**
 * Applies a prepared consumption batch as one autocommit statement that also checks and advances the checkpoint:
 * one round trip instead of five. Returns null, having changed nothing, when the batch does not directly follow
 * the checkpoint (a replay, a stale capture); the caller then takes applyChangeBatch's general path.
 */
export async function applyConsumptionsAtCheckpoint(
  pool: pg.Pool,
  pipelineId: string,
  epoch: string,
  changes: Change[],
  prepared: PreparedConsumptions,
  confirmLsn: bigint | null,
  extraColumns: readonly ExtraColumn[] = [],
): Promise<BatchResult | null> {
  const stmts = dwd.consumptionStatements(extraColumns);
  const values = checkpointValues(pipelineId, epoch, changes, prepared, confirmLsn);
  const run = (stmt: typeof stmts.atCheckpoint) => pool.query<{ ok: boolean }>(boundQuery(stmt, values));
  let rows: { ok: boolean }[];
  try {
    ({ rows } = await run(prepared.newKeys ? stmts.newKeysAtCheckpoint : stmts.atCheckpoint));
  } catch (err) {
    // A key the inserts expected to be new was there (written by a repair first): nothing was written.
    if (!prepared.newKeys || (err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
    ({ rows } = await run(stmts.atCheckpoint));
  }
  return rows[0].ok ? prepared.result : null;
}

const UNIQUE_VIOLATION = '23505';
const DEADLOCK = '40P01';

/** The parameters of a prepared consumption batch with those of the checkpoint before and after it. */
function checkpointValues(
  pipelineId: string,
  epoch: string,
  changes: Change[],
  prepared: PreparedConsumptions,
  confirmLsn: bigint | null,
) {
  const first = changes[0];
  const last = changes[changes.length - 1];
  return {
    ...prepared.params,
    pipeline_id: pipelineId,
    epoch,
    first_lsn: formatLsn(first.txLsn),
    first_seq: first.seq,
    commit_lsn: formatLsn(last.txLsn),
    seq: last.seq,
    confirmed_lsn: confirmLsn === null ? null : formatLsn(confirmLsn),
    changes: changes.length,
    max_event_time: prepared.result.maxEventTime,
  };
}

/**
 * The one-statement parameters of a batch that touches only consumptions (the common streaming case), built
 * while the previous batch is in the sink; null for other batches.
 */
export function prepareConsumptions(changes: Change[]): PreparedConsumptions | null {
  if (!changes.length || changes.some((c) => c.kind !== 'row' || c.table !== 'power_consumption'))
    return null;
  const result = emptyBatchResult();
  const { states, deadLetters, merged } = summarizeRows(changes, result);
  if (merged) return null;
  const newKeys =
    states.power_consumption.size === changes.length &&
    changes.every((c) => c.kind === 'row' && c.op === 'I' && c.oldKey === undefined);
  return { params: consumptionParams(changes, states.power_consumption, deadLetters), result, newKeys };
}

/**
 * The change log entries of a run of changes as the parameters of ods.changeLogEntries: the rows as one JSON
 * array, the rest as arrays, transaction LSN and commit time once per transaction. `withTables` adds each
 * change's table, for runs that are not all to one table.
 */
function changeLogParams(
  changes: Change[],
  withTables = false,
): Record<ods.ChangeLogParam | 'tables', unknown> {
  const n = changes.length;
  const rows = new Array<object>(n);
  const seqs = new Array<number>(n);
  const ops = new Array<string>(n);
  const txs = new Array<number>(n);
  const tables = withTables ? new Array<string>(n) : null;
  const txLsns: string[] = [];
  const txTimes: (string | null)[] = [];
  let oldKeys: (string | null)[] | null = null;
  let headLsn = -1n;
  for (let i = 0; i < n; i++) {
    const c = changes[i];
    if (c.txLsn !== headLsn) {
      headLsn = c.txLsn;
      txLsns.push(formatLsn(c.txLsn));
      txTimes.push(c.commitTime);
    }
    seqs[i] = c.seq;
    txs[i] = txLsns.length;
    if (c.kind === 'truncate') {
      rows[i] = { tables: c.tables };
      ops[i] = 'T';
      if (tables) tables[i] = c.tables.join(',');
      continue;
    }
    rows[i] = c.row;
    ops[i] = c.op;
    if (tables) tables[i] = c.table;
    if (c.oldKey !== undefined) (oldKeys ??= new Array<string | null>(n).fill(null))[i] = c.oldKey;
  }
  return {
    rows: JSON.stringify(rows),
    // Our own numbers and op letters as array literals (pg would quote every element); the few transaction values
    // and the old keys, which come from the source, keep pg's quoting.
    seqs: `{${seqs.join(',')}}`,
    ops: `{${ops.join(',')}}`,
    txs: `{${txs.join(',')}}`,
    tx_lsns: txLsns,
    tx_times: txTimes,
    old_keys: oldKeys,
    tables,
  };
}

type DeadLetter = {
  table_name: SourceTable;
  record_key: string;
  raw_row: Row;
  reason: string;
  lsn: string;
  seq: number;
};

/**
 * The state update `c` of key `key` leaves, given the state before it in this batch of the key it had before
 * (`before`, if any): the values `c` did not send are the ones `before` holds, else the ODS row's (see FinalState).
 */
function updatedState(
  c: Change & RowChange,
  key: string,
  before: FinalState | undefined,
  valid: boolean,
  at: number,
): FinalState {
  const state: FinalState = { row: c.row, op: c.op, lsn: c.txLsn, valid, at };
  const keyBefore = c.oldKey ?? key;
  const odsKey = before?.odsKey ?? keyBefore;
  if (odsKey !== key) state.odsKey = odsKey;
  if (!before?.row) return state;
  // The statement that reads rows from their change log entries looks unsent values up at the entry's old key.
  if (before.odsKey !== undefined) state.merged = true;
  for (const column in before.row) {
    if (column in c.row) continue;
    state.row = { ...before.row, ...c.row };
    state.merged = true;
    break;
  }
  return state;
}

/** Final state per key and dead letters of a run of row changes; counts them into `result`. */
function summarizeRows(
  changes: Change[],
  result: BatchResult,
): { states: Record<SourceTable, TableState>; deadLetters: DeadLetter[]; merged: boolean } {
  const states: Record<SourceTable, TableState> = { power_user: new Map(), power_consumption: new Map() };
  const deadLetters: DeadLetter[] = [];
  const days = new Set(result.days);
  let lastDay: string | null = null;
  let merged = false;
  for (let at = 0; at < changes.length; at++) {
    const c = changes[at];
    if (c.kind !== 'row') continue;
    const key = c.row[PRIMARY_KEY[c.table]];
    if (key === null || key === undefined) throw new Error(`change without primary key on ${c.table}`);
    const before = c.op === 'U' ? states[c.table].get(c.oldKey ?? key) : undefined;
    if (c.oldKey !== undefined || c.op === 'D') {
      const deleted: FinalState = { row: null, op: 'D', lsn: c.txLsn, valid: false, at };
      if (c.oldKey !== undefined) states[c.table].set(c.oldKey, deleted);
      if (c.op === 'D') states[c.table].set(key, deleted);
    }
    if (c.op !== 'D') {
      const reason = invalidReason(c.table, c.row);
      if (c.op === 'U') {
        const state = updatedState(c, key, before, !reason, at);
        merged ||= !!state.merged;
        states[c.table].set(key, state);
      } else {
        states[c.table].set(key, { row: c.row, op: c.op, lsn: c.txLsn, valid: !reason, at });
      }
      if (reason) {
        const lsn = formatLsn(c.txLsn);
        deadLetters.push({ table_name: c.table, record_key: key, raw_row: c.row, reason, lsn, seq: c.seq });
      } else if (c.table === 'power_consumption') {
        const eventTime = c.row.consumption_date as string;
        if (result.maxEventTime === null || eventTime > result.maxEventTime) result.maxEventTime = eventTime;
        // Rows of a batch mostly share their day: slice and hash only when it changes.
        if (lastDay === null || !eventTime.startsWith(lastDay)) days.add((lastDay = eventTime.slice(0, 10)));
      }
    }
    result.perTable[c.table] += 1;
    result.applied += 1;
  }
  result.days = [...days];
  result.deadLetters += deadLetters.length;
  return { states, deadLetters, merged };
}

function consumptionParams(
  changes: Change[],
  state: TableState,
  deadLetters: DeadLetter[],
): dwd.ConsumptionBatchParams {
  const upsertAt: number[] = [];
  const upsertValid: string[] = [];
  const deleted: string[] = [];
  const leaving: string[] = [];
  for (const [key, s] of state) {
    const fate = fateOf(s);
    if (fate === 'deleted') {
      deleted.push(key);
      leaving.push(key);
      continue;
    }
    // The statement reads the row from the change's change log entry (1-based, as WITH ORDINALITY counts).
    upsertAt.push(s.at + 1);
    upsertValid.push(fate === 'valid' ? 't' : 'f');
    if (fate === 'invalid') leaving.push(key);
  }
  return {
    ...changeLogParams(changes),
    // Array literals of our own numbers and flags, written out at once: pg quotes and escapes every element of an
    // array parameter, one by one. Keys come from the source and keep pg's quoting.
    upsert_at: `{${upsertAt.join(',')}}`,
    upsert_valid: `{${upsertValid.join(',')}}`,
    deleted,
    leaving,
    touched: [...state.keys()],
    dead_letters: JSON.stringify(deadLetters),
  };
}

async function applyRowSegment(
  client: pg.ClientBase,
  changes: Change[],
  result: BatchResult,
  extras: OdsExtras,
): Promise<void> {
  if (!changes.length) return;
  const { states, deadLetters, merged } = summarizeRows(changes, result);
  if (states.power_user.size === 0 && !merged) {
    // The common streaming case: one statement and one round trip for the whole batch.
    const stmt = dwd.consumptionStatements(extras.power_consumption).plain;
    await client.query(boundQuery(stmt, consumptionParams(changes, states.power_consumption, deadLetters)));
    return;
  }

  await client.query(boundQuery(ods.INSERT_CHANGE_LOG, changeLogParams(changes, true)));
  if (deadLetters.length) await client.query(ops.INSERT_DEAD_LETTERS, [JSON.stringify(deadLetters)]);

  const users = split(states.power_user, extras.power_user);
  const consumptions = split(states.power_consumption, extras.power_consumption);
  const touchedUsers = [...states.power_user.keys()];
  const touchedConsumptions = [...states.power_consumption.keys()];

  // ODS: raw current state, valid or not.
  for (const [table, rows] of [
    ['power_user', users],
    ['power_consumption', consumptions],
  ] as const) {
    if (rows.upserts.length)
      await client.query(ods.upsertOdsFromJson(table, extras[table]), [jsonArray(rows.upserts)]);
    if (rows.deletes.length) await client.query(ods.deleteOds(table), [rows.deletes]);
  }

  // DWS deltas: the touched detail rows leave as they were before DWD changes...
  await client.query(dwd.DELTAS_LEAVING_FOR_KEYS, [touchedConsumptions, touchedUsers]);

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

  // ...and enter as they are now.
  await client.query(dwd.DELTAS_ENTERING_FOR_KEYS, [touchedConsumptions, touchedUsers]);
}

/**
 * Splits final states into ODS writes (every row, valid or not, and deleted keys) and DWD writes (valid rows in;
 * deleted or invalid keys out). Rows are JSON text: the source row plus _lsn, _op and _valid, written out
 * directly (copying each row into a new object cost three times as much on a streaming batch); an updated row
 * without values of mirrored `extras` names them in _unsent (and the ODS row holding them in _ods_key).
 */
function split(
  state: TableState,
  extras: readonly ExtraColumn[],
): { upserts: string[]; deletes: string[]; valid: string[]; gone: string[] } {
  const out = {
    upserts: [] as string[],
    deletes: [] as string[],
    valid: [] as string[],
    gone: [] as string[],
  };
  const lsnText = lastLsnText();
  for (const [key, s] of state) {
    const fate = fateOf(s);
    if (fate === 'deleted') {
      out.deletes.push(key);
      out.gone.push(key);
      continue;
    }
    const body = JSON.stringify(s.row);
    const unsent = s.op === 'U' ? unsentMeta(s, extras) : '';
    const row = `${body.length > 2 ? body.slice(0, -1) + ',' : '{'}"_lsn":"${lsnText(s.lsn)}","_op":${JSON.stringify(s.op)},"_valid":${s.valid}${unsent}}`;
    out.upserts.push(row);
    if (fate === 'valid') out.valid.push(row);
    else out.gone.push(key);
  }
  return out;
}

/** `,"_unsent":[...],"_ods_key":...` for an updated row that lacks values of mirrored extra columns, else ''. */
function unsentMeta(s: FinalState, extras: readonly ExtraColumn[]): string {
  const row = s.row as Row;
  const unsent = extras.filter((c) => c.mirrored && !(c.name in row)).map((c) => c.name);
  if (!unsent.length) return '';
  return `,"_unsent":${JSON.stringify(unsent)},"_ods_key":${JSON.stringify(s.odsKey ?? null)}`;
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
    await client.query(ods.emptyOds('power_consumption'));
    await client.query(dwd.EMPTY_DWD_DETAILS);
  }
  if (tables.includes('power_user')) {
    await client.query(ods.emptyOds('power_user'));
    await client.query(dwd.EMPTY_DWD_USERS);
    await client.query(dwd.DETACH_ALL_DETAILS_FROM_USERS);
  }
}
