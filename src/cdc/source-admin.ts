/**
 * Source-side SQL in one place: publication, replication slot, snapshot COPY, wait markers and the reads status
 * takes from the source. Identifiers go through quoteIdent; values are parameters.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { quoteIdent } from '../db/sql';
import { withClient } from '../db/client';
import type { SourceColumn } from '../schema/evolution';
import { SOURCE_TABLES, TABLE, type SourceTable } from '../schema/tables';
import type { ColumnRef } from './changes';

export class SlotMissingError extends Error {
  constructor(slot: string, detail: string) {
    super(
      `replication slot "${slot}" does not exist (${detail}); recover with: stategrid pipeline stop && stategrid pipeline start --resync`,
    );
    this.name = 'SlotMissingError';
  }
}

export class PublicationAlteredError extends Error {
  constructor(publication: string, missing: string[]) {
    super(
      `publication "${publication}" no longer publishes ${missing.join(', ')} (ALTER/DROP PUBLICATION?); changes ` +
        'made since then were not sent by the server. Recover with: stategrid pipeline stop && stategrid pipeline start --resync',
    );
    this.name = 'PublicationAlteredError';
  }
}

/** Source tables the publication does not (or no longer) cover; pgoutput silently skips their changes. */
export async function unpublishedTables(source: pg.ClientBase, publication: string): Promise<SourceTable[]> {
  const { rows } = await source.query<{ tablename: string }>(
    `SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'`,
    [publication],
  );
  const published = new Set(rows.map((r) => r.tablename));
  return SOURCE_TABLES.filter((t) => !published.has(t));
}

export async function publicationExists(source: pg.ClientBase, publication: string): Promise<boolean> {
  const { rowCount } = await source.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication]);
  return !!rowCount;
}

export async function createPublication(source: pg.ClientBase, publication: string): Promise<void> {
  const tables = SOURCE_TABLES.map(quoteIdent).join(', ');
  await source.query(`CREATE PUBLICATION ${quoteIdent(publication)} FOR TABLE ${tables}`);
}

export async function addToPublication(
  source: pg.ClientBase,
  publication: string,
  table: SourceTable,
): Promise<void> {
  await source.query(`ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${quoteIdent(table)}`);
}

/** Drops the publication if it exists; tells whether it did. */
export async function dropPublication(source: pg.ClientBase, publication: string): Promise<boolean> {
  if (!(await publicationExists(source, publication))) return false;
  await source.query(`DROP PUBLICATION ${quoteIdent(publication)}`);
  return true;
}

export async function slotExists(sourceUrl: string, slotName: string): Promise<{ active: boolean } | null> {
  return withClient(sourceUrl, async (client) => {
    const { rows } = await client.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [
      slotName,
    ]);
    return rows[0] ? { active: rows[0].active } : null;
  });
}

/** SQLSTATE of dropping a slot a walsender still holds. */
const OBJECT_IN_USE = '55006';

/**
 * Drops a slot, ending the walsender that holds it first; tells whether there was one. Ends it again while the
 * drop finds the slot held (up to 5 s): the walsender may not have exited yet, or a running capture's client took
 * the slot again at once (a test dropping a running pipeline's slot failed on that after a single 500 ms wait).
 */
export async function dropSlot(sourceUrl: string, slotName: string): Promise<boolean> {
  return withClient(sourceUrl, async (client) => {
    for (let attempt = 1; ; attempt++) {
      await client.query(
        `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`,
        [slotName],
      );
      try {
        const res = await client.query(
          'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1',
          [slotName],
        );
        return (res.rowCount ?? 0) > 0;
      } catch (err) {
        if ((err as { code?: string }).code !== OBJECT_IN_USE || attempt >= 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
}

export type SlotFigures = {
  exists: boolean;
  active: boolean;
  lagBytes: number | null;
  walStatus: string | null;
  /**
   * What the slot's walsenders decoded and what of it went to disk because a transaction's changes outgrew the
   * decoding memory (STATEGRID_DECODING_WORK_MEM_MB), since the slot's statistics were last reset; null where
   * PostgreSQL has no statistics for the slot yet.
   */
  decoded: { transactions: number; bytes: number; spilledTransactions: number; spilledBytes: number } | null;
};

export async function slotFigures(sourceUrl: string, slotName: string): Promise<SlotFigures> {
  return withClient(sourceUrl, async (source) => {
    const { rows } = await source.query(
      `SELECT s.active, s.wal_status, (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint AS lag,
         d.total_txns, d.total_bytes, d.spill_txns, d.spill_bytes
       FROM pg_replication_slots s LEFT JOIN pg_stat_replication_slots d USING (slot_name)
       WHERE s.slot_name = $1`,
      [slotName],
    );
    if (!rows.length) return { exists: false, active: false, lagBytes: null, walStatus: null, decoded: null };
    const r = rows[0];
    return {
      exists: true,
      active: r.active,
      lagBytes: Number(r.lag),
      walStatus: r.wal_status,
      decoded:
        r.total_bytes === null
          ? null
          : {
              transactions: Number(r.total_txns),
              bytes: Number(r.total_bytes),
              spilledTransactions: Number(r.spill_txns),
              spilledBytes: Number(r.spill_bytes),
            },
    };
  });
}

/**
 * The temporary slot a pipeline's restart marks use: `<slot>_restart_mark`, or, where that passes PostgreSQL's 63
 * characters (slot names up to 58), the slot name cut short with a hash of the whole name so two long names that
 * share a prefix still get their own mark slot.
 */
export function restartMarkSlotName(slotName: string): string {
  const plain = `${slotName}_restart_mark`;
  if (plain.length <= 63) return plain;
  const hash = createHash('sha1').update(slotName).digest('hex').slice(0, 8);
  return `${slotName.slice(0, 41)}_${hash}_restart_mark`;
}

/**
 * Has the source log its running transactions (a running-xacts WAL record) whenever asked. A logical slot moves its
 * restart_lsn forward only at such a record, which the background writer logs every 15 s; a stream opened after a
 * takeover re-decodes all WAL from restart_lsn, which under load (the sink writing to the same database) was
 * ~140 MB, several seconds. PostgreSQL 15 has no function for it (16's pg_log_standby_snapshot is for superusers),
 * but creating a logical slot logs the record first thing: a temporary slot is begun under a short statement
 * timeout, so its wait for a consistent point is cut short (an error, which drops the slot) or, on an idle source,
 * it is created and dropped at once. One session for all marks; needs a free slot entry and the REPLICATION
 * attribute the stream needs anyway.
 */
export class RunningTransactionsMark {
  private client: pg.Client | null = null;

  constructor(
    private readonly sourceUrl: string,
    private readonly markSlot: string,
  ) {}

  async mark(): Promise<void> {
    const client = await this.session();
    try {
      await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)`, [this.markSlot]);
      await client.query(`SELECT pg_drop_replication_slot($1)`, [this.markSlot]);
    } catch (err) {
      // 57014: the statement timeout, after the record was logged; 42710: another worker's mark under way.
      if (['57014', '42710'].includes((err as { code?: string }).code ?? '')) return;
      await this.close();
      throw err;
    }
  }

  private async session(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.sourceUrl,
      application_name: 'stategrid-restart-mark',
    });
    client.on('error', () => undefined); // surfaced by the failing query
    await client.connect();
    await client.query(`SET statement_timeout = 50`);
    return (this.client = client);
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }
}

/** A slot created on a replication connection, with the snapshot it exported (valid while that connection lives). */
export async function createSlotWithSnapshot(
  repl: pg.Client,
  slotName: string,
  plugin: 'pgoutput' | 'wal2json',
): Promise<{ consistentPoint: string; snapshotName: string }> {
  const { rows } = await repl.query(
    `CREATE_REPLICATION_SLOT ${quoteIdent(slotName)} LOGICAL ${plugin} (SNAPSHOT 'export')`,
  );
  return { consistentPoint: rows[0].consistent_point, snapshotName: rows[0].snapshot_name };
}

/** Opens a read-only transaction on `reader` that sees exactly the exported snapshot. */
export async function beginInSnapshot(reader: pg.ClientBase, snapshotName: string): Promise<void> {
  await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // SET TRANSACTION SNAPSHOT takes no parameters; the name is a server-made token, quoted as a literal.
  await reader.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replace(/'/g, "''")}'`);
}

export async function endSnapshotRead(reader: pg.ClientBase): Promise<void> {
  await reader.query('COMMIT');
}

// The reported list with types: from the plugin's type OID and modifier where it sent them, else from the catalog
// (null for a column the catalog no longer has); with $5, also the catalog's columns the list lacks. `missing`:
// the value of a column added with a constant default, which the rows that predate it read (attmissingval, an
// array of one element); `defaultInRows`: a default with no such value (see SourceColumn).
const SOURCE_COLUMNS = `
WITH reported AS (
  SELECT * FROM unnest($2::text[], $3::oid[], $4::int[]) WITH ORDINALITY AS r(name, type_oid, typmod, pos)),
catalog AS (
  SELECT attname::text AS name, format_type(atttypid, atttypmod) AS type, attnum,
    CASE WHEN atthasmissing THEN (attmissingval::text::text[])[1] END AS missing,
    atthasdef AND NOT atthasmissing AS default_in_rows
  FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped)
SELECT name, type, missing, coalesce(default_in_rows, false) AS "defaultInRows" FROM (
  SELECT r.name, coalesce(format_type(r.type_oid, r.typmod), c.type) AS type, c.missing, c.default_in_rows, r.pos
  FROM reported r LEFT JOIN catalog c ON c.name = r.name
  UNION ALL
  SELECT c.name, c.type, c.missing, c.default_in_rows, 1000000 + c.attnum FROM catalog c
  WHERE $5 AND NOT EXISTS (SELECT 1 FROM reported r WHERE r.name = c.name)) x
ORDER BY pos`;

/**
 * A source table's columns with their types as format_type prints them. `reported`: the list a change carried;
 * with type OIDs (pgoutput's Relation message) exactly that list, with names only (wal2json) those names plus the
 * catalog's other columns (an update leaves out unchanged TOASTed values, so a missing name proves nothing).
 * null: the catalog's list, as the snapshot copies it.
 */
export async function sourceColumns(
  source: pg.ClientBase,
  table: SourceTable,
  reported: ColumnRef[] | null,
): Promise<SourceColumn[]> {
  const refs = reported ?? [];
  const namesOnly = refs.every((r) => r.typeOid === null);
  const { rows } = await source.query<SourceColumn>(SOURCE_COLUMNS, [
    `public.${quoteIdent(table)}`,
    refs.map((r) => r.name),
    refs.map((r) => r.typeOid),
    refs.map((r) => r.typmod),
    namesOnly,
  ]);
  return rows;
}

/**
 * COPY of the next chunk of a source table in key order, after `lastKey` (a bigint we read back ourselves).
 * `columnNames`: what to copy, by default the spec's columns.
 */
export function copyChunkSql(
  table: SourceTable,
  lastKey: string | null,
  rows: number,
  columnNames?: readonly string[],
): string {
  if (lastKey !== null && !/^-?\d+$/.test(lastKey)) throw new Error(`bad snapshot key ${lastKey}`);
  const spec = TABLE[table];
  const where = lastKey === null ? '' : ` WHERE ${spec.key} > ${lastKey}`;
  const columns = (columnNames ?? spec.columns.map((c) => c.name)).map(quoteIdent).join(', ');
  return `COPY (SELECT ${columns} FROM ${quoteIdent(table)}${where} ORDER BY ${spec.key}
    LIMIT ${Math.floor(rows)}) TO STDOUT`;
}

/**
 * Upper keys of consecutive ranges of about `rows` rows each, read in the caller's snapshot (the last range is
 * open-ended): the chunks a fanned-out snapshot hands to its workers. Keys that fill their span closely (serial
 * ids, the usual case) are cut into equal spans of key values from min, max and count, which reads the table once
 * without sorting it; sparse or clustered keys are cut by row number, exact but a sort of every key.
 */
export async function chunkBoundaries(
  reader: pg.ClientBase,
  table: SourceTable,
  rows: number,
): Promise<string[]> {
  const key = TABLE[table].key;
  const perChunk = Math.max(1, Math.floor(rows));
  const { rows: span } = await reader.query<{ lo: string | null; hi: string | null; n: string }>(
    `SELECT min(${key})::text AS lo, max(${key})::text AS hi, count(*)::text AS n FROM ${quoteIdent(table)}`,
  );
  const n = BigInt(span[0].n);
  if (n <= BigInt(perChunk)) return [];
  const lo = BigInt(span[0].lo!);
  const width = BigInt(span[0].hi!) - lo + 1n;
  // Up to twice as many key values as rows: chunks stay within 2x of `rows` however the gaps fall.
  if (width <= 2n * n) {
    const step = (BigInt(perChunk) * width + n - 1n) / n;
    const bounds: string[] = [];
    for (let upper = lo + step - 1n; upper < lo + width - 1n; upper += step) bounds.push(upper.toString());
    return bounds;
  }
  // Ordered by the bigint key, not its text (an alias named like the key would sort "10000" before "5000").
  const { rows: found } = await reader.query<{ upper: string }>(
    `SELECT k::text AS upper FROM (SELECT ${key} AS k, row_number() OVER (ORDER BY ${key}) AS n
       FROM ${quoteIdent(table)}) x WHERE n % $1 = 0 ORDER BY x.k`,
    [perChunk],
  );
  return found.map((r) => r.upper);
}

/** COPY of the keys in (`after`, `upTo`] of a table (null: unbounded), for one planned chunk. */
export function copyRangeSql(
  table: SourceTable,
  after: string | null,
  upTo: string | null,
  columnNames: readonly string[],
): string {
  for (const k of [after, upTo])
    if (k !== null && !/^-?\d+$/.test(k)) throw new Error(`bad snapshot key ${k}`);
  const key = TABLE[table].key;
  const where = [after === null ? null : `${key} > ${after}`, upTo === null ? null : `${key} <= ${upTo}`]
    .filter(Boolean)
    .join(' AND ');
  return `COPY (SELECT ${columnNames.map(quoteIdent).join(', ')} FROM ${quoteIdent(table)}${
    where ? ` WHERE ${where}` : ''
  }) TO STDOUT`;
}

/** A non-transactional logical message with a `stategrid…` prefix: the capture confirms past it. */
async function emitMarker(source: pg.ClientBase, prefix: string): Promise<string> {
  const { rows } = await source.query<{ lsn: string }>(
    `SELECT pg_logical_emit_message(false, $1, '')::text AS lsn`,
    [prefix],
  );
  return rows[0].lsn;
}

/**
 * Writes a non-transactional marker into the source WAL and returns its position: once the pipeline has confirmed
 * past it, everything committed before the call is applied.
 */
export async function emitWaitMarker(sourceUrl: string): Promise<string> {
  return withClient(sourceUrl, (source) => emitMarker(source, 'stategrid.wait'));
}

/**
 * Low watermark of a repair read: a marker `lsn` in the WAL, then a transaction id taken after it. Every
 * transaction whose commit record precedes the marker got its id before it, so once every id up to `xid` has ended
 * (waitTransactionsEnded) a new snapshot sees all of them. Waiting for the xmax of a snapshot taken after the
 * marker would not do: a transaction may have written its commit record and not yet left the running set.
 */
export async function repairLowWatermark(source: pg.ClientBase): Promise<{ lsn: string; xid: string }> {
  await source.query('BEGIN');
  try {
    const lsn = await emitMarker(source, 'stategrid.repair.low');
    const { rows } = await source.query<{ xid: string }>(`SELECT pg_current_xact_id()::text AS xid`);
    await source.query('COMMIT');
    return { lsn, xid: rows[0].xid };
  } catch (err) {
    await source.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Waits until every source transaction with an id up to `xid` has committed or aborted. */
export async function waitTransactionsEnded(
  source: pg.ClientBase,
  xid: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await source.query<{ ended: boolean }>(
      `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8 AS ended`,
      [xid],
    );
    if (rows[0].ended) return;
    if (Date.now() > deadline)
      throw new Error(`source transactions older than ${xid} still running after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** JSON array of rows (text values), the keys found, and the columns read. */
export type SourceRows = { rows: string; present: string[]; columns: string[] };

/**
 * The current rows of the given keys of each table, all read in one REPEATABLE READ snapshot: per table a JSON
 * array of rows with every column in its text form (as the stream delivers them) and the keys found.
 */
export async function readRowsInOneSnapshot(
  source: pg.ClientBase,
  keys: Record<SourceTable, string[]>,
  extraColumns: Record<SourceTable, readonly string[]> = { power_user: [], power_consumption: [] },
): Promise<Record<SourceTable, SourceRows>> {
  await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const out = {} as Record<SourceTable, SourceRows>;
    for (const table of SOURCE_TABLES) {
      const spec = TABLE[table];
      // Extra columns the ODS mirror has and the source still has (a column dropped since is not read).
      const present = new Set((await sourceColumns(source, table, null)).map((c) => c.name));
      const names = [
        ...spec.columns.map((c) => c.name),
        ...extraColumns[table].filter((n) => present.has(n)),
      ];
      const select = names.map((n) => `${quoteIdent(n)}::text AS ${quoteIdent(n)}`).join(', ');
      const { rows } = await source.query<SourceRows>(
        `SELECT COALESCE(json_agg(x), '[]')::text AS rows, COALESCE(array_agg(x.${spec.key}), '{}') AS present
         FROM (SELECT ${select} FROM ${quoteIdent(table)} WHERE ${spec.key} = ANY($1::bigint[])) x`,
        [keys[table]],
      );
      out[table] = { ...rows[0], columns: names };
    }
    await source.query('COMMIT');
    return out;
  } catch (err) {
    await source.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

export async function sourceRowCount(sourceUrl: string): Promise<number> {
  return withClient(sourceUrl, async (db) => {
    const counts = SOURCE_TABLES.map((t) => `(SELECT count(*) FROM ${quoteIdent(t)})`).join(' + ');
    const { rows } = await db.query(`SELECT ${counts} AS n`);
    return Number(rows[0].n);
  });
}

/** Empties the source tables (tests and benchmarks only). */
export async function truncateSource(sourceUrl: string): Promise<void> {
  await withClient(sourceUrl, (db) => db.query(`TRUNCATE ${SOURCE_TABLES.map(quoteIdent).join(', ')}`));
}

/**
 * Watches the publication while a pgoutput stream runs: a table dropped from it must stop the pipeline, not go
 * silent. Checks at most every `intervalMs` unless forced.
 */
export class PublicationGuard {
  private lastCheck = 0;
  private constructor(
    private readonly client: pg.Client | null,
    private readonly publication: string,
    private readonly intervalMs: number,
  ) {}

  static async open(
    sourceUrl: string,
    publication: string,
    plugin: 'pgoutput' | 'wal2json',
    intervalMs = 3000,
  ): Promise<PublicationGuard> {
    if (plugin !== 'pgoutput') return new PublicationGuard(null, publication, intervalMs);
    const client = new pg.Client({ connectionString: sourceUrl });
    client.on('error', () => undefined); // surfaced by the failing query
    await client.connect();
    const guard = new PublicationGuard(client, publication, intervalMs);
    try {
      await guard.check(true);
    } catch (err) {
      await guard.close();
      throw err;
    }
    return guard;
  }

  async check(force = false): Promise<void> {
    if (!this.client || (!force && Date.now() - this.lastCheck < this.intervalMs)) return;
    this.lastCheck = Date.now();
    const missing = await unpublishedTables(this.client, this.publication);
    if (missing.length) throw new PublicationAlteredError(this.publication, missing);
  }

  async close(): Promise<void> {
    await this.client?.end().catch(() => undefined);
  }
}
