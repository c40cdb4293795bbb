/** What status, health checks and `wait` read from the sink. */
import type pg from 'pg';
import { CONSUMPTION_TABLE, LAYER_TABLES } from '../schema/tables';
import { readCheckpoint, type CheckpointRow } from './checkpoint';
import { lastRepair } from './repair';
import { odsColumnReport, UNFILLED_COLUMNS, type OdsColumnReport } from './ods-columns';
import { lastVerifyRun, type VerifyRun } from './verify-sql';

/**
 * Read after every capture segment. `provisionalDays` are the days with provisional DWS rows: a segment reports the
 * days its own batches touched, and when its result is lost (its activity timed out while the Temporal server was
 * down, and the retry found every row applied), these still tell the workflow which days to close.
 */
export type SinkHealth = {
  orphans: number;
  deadLetters: number;
  provisionalDays: string[];
  /** ODS columns whose older rows wait for values only the source has (see UNFILLED). */
  unfilledColumns: number;
};

// Orphans: DWD details without a known region (a partial index keeps this off a table scan).
const ORPHANS = `(SELECT count(*) FROM ${CONSUMPTION_TABLE.dwd} WHERE region_id IS NULL)::int AS orphans`;
const DEAD_LETTERS = `(SELECT count(*) FROM stategrid_dead_letter)::int AS dead_letters`;
const PROVISIONAL_DAYS = `(SELECT string_agg(DISTINCT stat_date::text, ',') FROM dws_region_daily_stats
  WHERE NOT is_final) AS provisional_days`;

/** Orphans, dead letters, provisional days and unfilled columns in one round trip. */
export async function sinkHealth(db: pg.ClientBase | pg.Pool): Promise<SinkHealth> {
  const { rows } = await db.query(
    `SELECT ${ORPHANS}, ${DEAD_LETTERS}, ${PROVISIONAL_DAYS}, ${UNFILLED_COLUMNS}`,
  );
  const days: string | null = rows[0].provisional_days;
  return {
    orphans: rows[0].orphans,
    deadLetters: rows[0].dead_letters,
    provisionalDays: days ? days.split(',') : [],
    unfilledColumns: rows[0].unfilled_columns,
  };
}

export type SinkFigures = {
  checkpoint: CheckpointRow | null;
  rows: Record<string, number>;
  deadLetters: number;
  orphans: number;
  lateEvents: number;
  revisions: number;
  closedDays: number;
  /** The last `verify` of this pipeline, if any. */
  lastVerify: VerifyRun | null;
  /** The last `verify --repair` that handled anything: when, and repairs per table and action. */
  lastRepair: Awaited<ReturnType<typeof lastRepair>>;
  /** Source columns beyond the spec: mirrored into ODS, dropped at the source, or not mirrored (and why). */
  odsColumns: OdsColumnReport[];
};

const COUNTED_TABLES = [...LAYER_TABLES, 'ods_change_log'];
// The ranking view's rows, without ranking them: one per total with rows.
const COUNT_RANKING = `SELECT 'dws_user_ranking' AS t, count(*)::bigint AS n FROM dws_user_day_total WHERE detail_rows > 0`;

export async function sinkFigures(db: pg.ClientBase, pipelineId: string): Promise<SinkFigures> {
  const checkpoint = await readCheckpoint(db, pipelineId);
  const counts = await db.query(
    [...COUNTED_TABLES.map((t) => `SELECT '${t}' AS t, count(*)::bigint AS n FROM ${t}`), COUNT_RANKING].join(
      ' UNION ALL ',
    ),
  );
  const extra = await db.query(`SELECT ${DEAD_LETTERS}, ${ORPHANS},
    (SELECT COALESCE(sum(late_events), 0) FROM stategrid_window)::bigint AS late_events,
    (SELECT count(*) FROM dws_revision)::bigint AS revisions,
    (SELECT count(*) FROM stategrid_window WHERE is_final)::bigint AS closed_days`);
  const e = extra.rows[0];
  return {
    checkpoint,
    rows: Object.fromEntries(counts.rows.map((r) => [r.t, Number(r.n)])),
    deadLetters: Number(e.dead_letters),
    orphans: Number(e.orphans),
    lateEvents: Number(e.late_events),
    revisions: Number(e.revisions),
    closedDays: Number(e.closed_days),
    lastVerify: await lastVerifyRun(db, pipelineId),
    lastRepair: await lastRepair(db, pipelineId),
    odsColumns: await odsColumnReport(db),
  };
}

/** Empties every sink table (tests and benchmarks start from a clean slate; never used by the product). */
export async function truncateSink(db: pg.ClientBase): Promise<void> {
  const tables = [
    ...COUNTED_TABLES,
    'stategrid_checkpoint',
    'stategrid_dws_cursor',
    'stategrid_dead_letter',
    'stategrid_dws_dirty',
    'stategrid_dws_delta',
    'dws_user_day_total',
    'stategrid_window',
    'dws_revision',
    'stategrid_verify_run',
    'stategrid_repair',
    'stategrid_ods_column',
  ];
  await db.query(`TRUNCATE ${tables.join(', ')}`);
}
