import assert from 'node:assert/strict';
import type pg from 'pg';

/**
 * A source-side audit of the change log: a second logical slot, read through PostgreSQL's SQL interface with the
 * wal2json plugin (not the pipeline's streaming connection or decoders), records every committed change of the two
 * source tables; `compare` matches them with `ods_change_log`, change for change.
 *
 * Create it after the test's seed rows and before the pipeline's slot (freshPipeline does this when the context asks
 * for an audit), so it sees exactly what the pipeline streams; drop it at the end of the test so it never holds WAL.
 */
export const AUDIT_SLOT = 'test_wal_audit';
/** Audited changes, one row each, in the source database; kept across reads because reading consumes the slot. */
export const AUDIT_TABLE = 'test_wal_audit_change';

const PRIMARY_KEY_OF = `CASE d->>'table' WHEN 'power_user' THEN 'user_id' ELSE 'consumption_id' END`;
const COLUMNS_AS_TEXT = (field: string) =>
  `(SELECT jsonb_object_agg(c->>'name', c->'value' #>> '{}') FROM jsonb_array_elements(d->'${field}') c)`;
const IDENTITY_KEY = `(SELECT c->'value' #>> '{}' FROM jsonb_array_elements(d->'identity') c
  WHERE c->>'name' = ${PRIMARY_KEY_OF})`;

/**
 * Reads (and consumes) what the slot decoded since the last read into AUDIT_TABLE. wal2json format 2 gives each
 * transaction a B record (commit start `lsn`, commit end `nextlsn`, commit `timestamp`) before its changes; a
 * change belongs to the B record before it. Values become their text form (wal2json prints numbers bare).
 */
const COLLECT = `
WITH raw AS (
  SELECT w.ord, w.data::jsonb AS d
  FROM pg_logical_slot_get_changes('${AUDIT_SLOT}', NULL, NULL, 'format-version', '2', 'include-lsn', '1',
    'include-timestamp', '1', 'include-transaction', '1', 'include-xids', '1',
    'add-tables', 'public.power_user,public.power_consumption') WITH ORDINALITY AS w(lsn, xid, data, ord)),
placed AS (
  SELECT raw.*, max(ord) FILTER (WHERE d->>'action' = 'B') OVER (ORDER BY ord) AS begin_ord FROM raw),
base AS (SELECT coalesce(max(ord), 0) AS n FROM ${AUDIT_TABLE})
INSERT INTO ${AUDIT_TABLE} (ord, xid, commit_start, commit_end, commit_time, pos, table_name, op, row_data, old_key)
SELECT base.n + p.ord, (b.d->>'xid')::bigint, (b.d->>'lsn')::pg_lsn, (b.d->>'nextlsn')::pg_lsn,
  (b.d->>'timestamp')::timestamptz, row_number() OVER (PARTITION BY p.begin_ord ORDER BY p.ord),
  p.d->>'table', p.d->>'action',
  CASE p.d->>'action' WHEN 'T' THEN jsonb_build_object('tables', jsonb_build_array(p.d->>'table'))
    WHEN 'D' THEN x.identity_row ELSE x.new_row END,
  CASE WHEN p.d->>'action' = 'U' AND x.identity_key IS DISTINCT FROM x.new_row->>x.pk
    THEN jsonb_build_object(x.pk, x.identity_key) END
FROM placed p
JOIN raw b ON b.ord = p.begin_ord
CROSS JOIN base
CROSS JOIN LATERAL (SELECT ${PRIMARY_KEY_OF} AS pk, ${COLUMNS_AS_TEXT('columns')} AS new_row,
    ${COLUMNS_AS_TEXT('identity')} AS identity_row, ${IDENTITY_KEY} AS identity_key
  FROM (SELECT p.d) AS q(d)) x
WHERE p.d->>'action' IN ('I', 'U', 'D', 'T')`;

/**
 * Both sides brought to one shape: (commit_lsn, position in the transaction, table, op, row, old key, commit time).
 * A TRUNCATE of several tables is one log row under pgoutput and one record per table under wal2json, so log T rows
 * are expanded per table and positions renumbered. A deleted row's key tuple carries nulls for the other columns
 * under pgoutput and omits them under wal2json: nulls are dropped for D. wal2json prints a NaN numeric as null, so
 * 'NaN' in the log compares as null (the audit cannot see the difference).
 */
const NAN_AS_NULL = (row: string) => `CASE WHEN ${row} ? 'consumption_amount' THEN ${row}
  || jsonb_build_object('consumption_amount', nullif(${row}->>'consumption_amount', 'NaN'),
    'consumption_cost', nullif(${row}->>'consumption_cost', 'NaN')) ELSE ${row} END`;
const LOGGED = `
SELECT l.commit_lsn, row_number() OVER (PARTITION BY l.commit_lsn ORDER BY l.seq, t.ord)::int AS pos,
  coalesce(t.name, l.table_name) AS table_name, l.op::text AS op,
  CASE l.op WHEN 'T' THEN jsonb_build_object('tables', jsonb_build_array(t.name))
    WHEN 'D' THEN jsonb_strip_nulls(${NAN_AS_NULL('l.row_data')}) ELSE ${NAN_AS_NULL('l.row_data')} END AS row_data,
  l.old_key, l.commit_time
FROM ods_change_log l
LEFT JOIN LATERAL jsonb_array_elements_text(CASE WHEN l.op = 'T' THEN l.row_data->'tables' END)
  WITH ORDINALITY AS t(name, ord) ON true`;
const AUDITED = (commitLsn: string) => `
SELECT ${commitLsn} AS commit_lsn, pos::int, table_name, op::text AS op,
  CASE op WHEN 'D' THEN jsonb_strip_nulls(row_data) ELSE row_data END AS row_data, old_key, commit_time
FROM ${AUDIT_TABLE}`;

export type AuditComparison = {
  audited: number;
  logged: number;
  /** Committed changes the change log lacks or holds with other values. */
  missing: string[];
  /** Change log rows no committed change accounts for (duplicates, other values, other positions). */
  extra: string[];
  missingCount: number;
  extraCount: number;
};

export class WalAudit {
  private constructor(
    private readonly db: pg.Pool,
    /** The pipeline's decoding plugin: it decides which commit LSN the change log keys a transaction by. */
    private readonly plugin: 'pgoutput' | 'wal2json',
  ) {}

  /** Creates the audit slot (dropping one a crashed run left behind) and an empty audit table. */
  static async start(db: pg.Pool, plugin: 'pgoutput' | 'wal2json'): Promise<WalAudit> {
    await dropAuditSlot(db);
    await db.query(`DROP TABLE IF EXISTS ${AUDIT_TABLE}`);
    await db.query(`CREATE TABLE ${AUDIT_TABLE} (ord bigint PRIMARY KEY, xid bigint, commit_start pg_lsn,
      commit_end pg_lsn, commit_time timestamptz, pos int, table_name text, op text, row_data jsonb, old_key jsonb)`);
    await db.query(`SELECT pg_create_logical_replication_slot('${AUDIT_SLOT}', 'wal2json')`);
    return new WalAudit(db, plugin);
  }

  /** The audited changes so far, as a relation with the change log's columns (for oracles that need history). */
  async changes(): Promise<string> {
    await this.db.query(COLLECT);
    return `(${AUDITED(this.commitLsn())})`;
  }

  /** pgoutput keys a transaction by its commit record's start, the pipeline's wal2json decoder by its end. */
  private commitLsn(): string {
    return this.plugin === 'pgoutput' ? 'commit_start' : 'commit_end';
  }

  /** Reads what the slot decoded since the last call and compares every audited change with the change log. */
  async compare(samples = 5): Promise<AuditComparison> {
    await this.db.query(COLLECT);
    const audited = AUDITED(this.commitLsn());
    const diff = async (a: string, b: string) =>
      (
        await this.db.query<{ r: string }>(
          `SELECT (d.*)::text AS r FROM ((${a}) EXCEPT ALL (${b})) d ORDER BY 1 LIMIT ${samples}`,
        )
      ).rows.map((r) => r.r);
    const counts = await this.db.query<{ audited: string; logged: string; missing: string; extra: string }>(
      `SELECT (SELECT count(*) FROM (${audited}) a) AS audited, (SELECT count(*) FROM (${LOGGED}) l) AS logged,
         (SELECT count(*) FROM ((${audited}) EXCEPT ALL (${LOGGED})) m) AS missing,
         (SELECT count(*) FROM ((${LOGGED}) EXCEPT ALL (${audited})) x) AS extra`,
    );
    const c = counts.rows[0];
    const missing = Number(c.missing) ? await diff(audited, LOGGED) : [];
    const extra = Number(c.extra) ? await diff(LOGGED, audited) : [];
    if (Number(c.missing) > missing.length) missing.push(`… ${Number(c.missing) - missing.length} more`);
    if (Number(c.extra) > extra.length) extra.push(`… ${Number(c.extra) - extra.length} more`);
    return {
      audited: Number(c.audited),
      logged: Number(c.logged),
      missing,
      extra,
      missingCount: Number(c.missing),
      extraCount: Number(c.extra),
    };
  }

  /** Every committed change is in the change log exactly once, with the same values, position and commit. */
  async assertMatchesChangeLog(): Promise<AuditComparison> {
    const r = await this.compare();
    assert.deepEqual(
      { missing: r.missing, extra: r.extra },
      { missing: [], extra: [] },
      `change log differs from the WAL (${r.audited} changes committed, ${r.logged} logged)`,
    );
    return r;
  }

  /** Drops the slot (so it holds no WAL) and the audit table. */
  async drop(): Promise<void> {
    await dropAuditSlot(this.db);
    await this.db.query(`DROP TABLE IF EXISTS ${AUDIT_TABLE}`);
  }
}

async function dropAuditSlot(db: pg.Pool): Promise<void> {
  await db.query(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${AUDIT_SLOT}'`,
  );
}
