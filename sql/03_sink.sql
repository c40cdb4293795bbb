-- Sink schema: ODS mirror + change log, DWD, DWS and the pipeline's own bookkeeping (docs/data-semantics.md).
CREATE TABLE IF NOT EXISTS ods_power_user (
  user_id      BIGINT PRIMARY KEY,
  user_name    VARCHAR(100),
  usage_type   VARCHAR(20),
  region_id    INT,
  region_name  VARCHAR(50),
  update_time  TIMESTAMP(3),
  _lsn         PG_LSN,
  _op          CHAR(1) NOT NULL,
  _synced_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ods_power_consumption (
  consumption_id     BIGINT PRIMARY KEY,
  user_id            BIGINT,
  consumption_amount NUMERIC(12, 2),
  consumption_cost   NUMERIC(12, 2),
  consumption_date   TIMESTAMP(3),
  _lsn               PG_LSN,
  _op                CHAR(1) NOT NULL,
  _synced_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per captured change; (commit_lsn, seq) is the change's position in the source's commit order.
CREATE TABLE IF NOT EXISTS ods_change_log (
  commit_lsn  PG_LSN NOT NULL,
  seq         INT NOT NULL,
  table_name  TEXT NOT NULL,
  op          CHAR(1) NOT NULL CHECK (op IN ('I', 'U', 'D', 'T')),
  row_data    JSONB,
  old_key     JSONB,
  commit_time TIMESTAMPTZ,
  PRIMARY KEY (commit_lsn, seq)
);

CREATE TABLE IF NOT EXISTS dwd_power_user_info (
  user_id     BIGINT PRIMARY KEY,
  user_name   VARCHAR(100) NOT NULL,
  usage_type  VARCHAR(20),
  region_id   INT NOT NULL,
  region_name VARCHAR(50) NOT NULL,
  update_time TIMESTAMP(3),
  etl_time    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS dwd_power_consumption_detail (
  consumption_id     BIGINT PRIMARY KEY,
  user_id            BIGINT NOT NULL,
  user_name          VARCHAR(100),
  consumption_amount NUMERIC(12, 2) NOT NULL,
  consumption_cost   NUMERIC(12, 2) NOT NULL,
  consumption_date   TIMESTAMP(3) NOT NULL,
  region_id          INT,
  region_name        VARCHAR(50),
  usage_type         VARCHAR(20),
  etl_time           TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Its secondary indexes are in 05_dwd_indexes.sql (an initial snapshot builds them after its bulk load).

CREATE TABLE IF NOT EXISTS dws_region_daily_stats (
  region_id         INT NOT NULL,
  region_name       VARCHAR(50) NOT NULL,
  stat_date         DATE NOT NULL,
  total_consumption NUMERIC(20, 2) NOT NULL,
  total_cost        NUMERIC(20, 2) NOT NULL,
  user_count        BIGINT NOT NULL,
  max_consumption   NUMERIC(12, 2) NOT NULL,
  is_final          BOOLEAN NOT NULL DEFAULT false,
  updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (stat_date, region_id, region_name)
);

-- Per-user day totals of DWD, the grouping behind both DWS tables, maintained by the DWS refresher from the deltas
-- batches leave (docs/data-semantics.md#dws-grouping-and-ranking). A row with detail_rows = 0 is a user who left
-- the partition (the ranking view skips it); the next whole-partition recompute deletes it. Names are part of the
-- key: a rename moves the user's rows.
CREATE TABLE IF NOT EXISTS dws_user_day_total (
  stat_date         DATE NOT NULL,
  region_id         INT NOT NULL,
  user_id           BIGINT NOT NULL,
  region_name       VARCHAR(50) NOT NULL,
  user_name         VARCHAR(100) NOT NULL,
  total_consumption NUMERIC(20, 2) NOT NULL,
  total_cost        NUMERIC(20, 2) NOT NULL,
  detail_rows       BIGINT NOT NULL,
  max_consumption   NUMERIC(12, 2),
  updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (stat_date, region_id, user_id, region_name, user_name)
) WITH (fillfactor = 70);
-- Every refresh rewrites the totals of the users it touched: free room on each page lets most of these updates
-- stay on their page without new index entries (HOT); full pages made four in five of them non-HOT.

-- DWD row changes not yet in dws_user_day_total: each batch appends, in its own transaction, its detail rows
-- before the change (rows < 0) and after it (rows > 0); the refresher deletes what it applies in the transaction
-- that applies it, so every change counts exactly once. No index: it is read whole and emptied by every refresh.
-- Unlogged: its rows and their deletion would be two of every streamed row's WAL records, which the sink writes and
-- a walsender reads. A crash (or a standby's promotion) empties it; stategrid_dws_delta_parts says which partitions
-- then lost deltas, and the sentinel below that it happened (docs/architecture.md, "Exactly-once effect").
CREATE UNLOGGED TABLE IF NOT EXISTS stategrid_dws_delta (
  stat_date   DATE NOT NULL,
  region_id   INT NOT NULL,
  user_id     BIGINT NOT NULL,
  region_name VARCHAR(50) NOT NULL,
  user_name   VARCHAR(100) NOT NULL,
  amount      NUMERIC(12, 2) NOT NULL,
  cost        NUMERIC(12, 2) NOT NULL,
  rows        INT NOT NULL
);

-- Installs from before it was unlogged (a no-op once it is).
ALTER TABLE stategrid_dws_delta SET UNLOGGED;

-- The (day, region) partitions of the deltas appended and not yet applied, one row per partition per write, in the
-- writer's transaction (logged): after a crash emptied the deltas, these partitions are rebuilt from DWD.
CREATE TABLE IF NOT EXISTS stategrid_dws_delta_parts (
  stat_date DATE NOT NULL,
  region_id INT NOT NULL
);

-- One row while the unlogged deltas are intact: a crash empties this table too. Only the DWS writer that finds it
-- empty, and marks stategrid_dws_delta_parts for rebuilding, puts the row back; initialization never does.
CREATE UNLOGGED TABLE IF NOT EXISTS stategrid_dws_delta_intact (
  intact BOOLEAN NOT NULL
);

-- Resume point of each pipeline; written in the same transaction as the data it covers.
CREATE TABLE IF NOT EXISTS stategrid_checkpoint (
  pipeline_id     TEXT PRIMARY KEY,
  slot_name       TEXT NOT NULL,
  phase           TEXT NOT NULL DEFAULT 'new',
  -- Bumped by every (re)snapshot: a capture left over from an earlier incarnation can no longer write.
  epoch           BIGINT NOT NULL DEFAULT 0,
  commit_lsn      PG_LSN NOT NULL DEFAULT '0/0',
  seq             INT NOT NULL DEFAULT 0,
  confirmed_lsn   PG_LSN NOT NULL DEFAULT '0/0',
  snapshot_rows   BIGINT NOT NULL DEFAULT 0,
  changes_applied BIGINT NOT NULL DEFAULT 0,
  max_event_time  TIMESTAMP(3),
  updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The DWS cursor: DWS holds every change up to dws_lsn of the epoch. A row apart from the checkpoint, which every
-- batch holds locked while it writes: a refresh that wrote its cursor there waited for the batch in flight.
CREATE TABLE IF NOT EXISTS stategrid_dws_cursor (
  pipeline_id TEXT PRIMARY KEY,
  epoch       BIGINT NOT NULL,
  dws_lsn     PG_LSN NOT NULL
);

CREATE TABLE IF NOT EXISTS stategrid_dead_letter (
  id          BIGSERIAL PRIMARY KEY,
  table_name  TEXT NOT NULL,
  record_key  TEXT,
  raw_row     JSONB,
  reason      TEXT NOT NULL,
  lsn         PG_LSN,
  seq         INT,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- (day, region) partitions of DWS that DWD changes touched and the next refresh must recompute.
CREATE TABLE IF NOT EXISTS stategrid_dws_dirty (
  stat_date DATE NOT NULL,
  region_id INT NOT NULL,
  changes   BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (stat_date, region_id)
);

-- Per-day window state: closed days have is_final rows; late changes count here and leave revisions.
CREATE TABLE IF NOT EXISTS stategrid_window (
  stat_date   DATE PRIMARY KEY,
  is_final    BOOLEAN NOT NULL DEFAULT false,
  closed_at   TIMESTAMPTZ,
  closed_by   TEXT,
  late_events BIGINT NOT NULL DEFAULT 0,
  revisions   INT NOT NULL DEFAULT 0
);

-- An earlier version kept dws_user_ranking as a table: every refresh rewrote each rank a change shifted, which
-- with changes spread over many partitions is most of the table (Flink's Top-N pays the same). It is a view now.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('dws_user_ranking') AND relkind = 'r') THEN
    DROP TABLE dws_user_ranking;
  END IF;
END $$;
ALTER TABLE dws_user_day_total ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- Ranks computed when read, from the per-user day totals the refresher keeps current: a change costs one total,
-- not the ranks it shifts. A filter on stat_date and region_id (the window's partition) reaches the totals' key,
-- so reading a (day, region) reads that partition only. updated_at: when the user's total last changed.
CREATE OR REPLACE VIEW dws_user_ranking AS
SELECT t.stat_date, t.user_id, t.user_name, t.region_id, t.region_name, t.total_consumption, t.total_cost,
  (row_number() OVER (PARTITION BY t.stat_date, t.region_id ORDER BY t.total_consumption DESC, t.user_id))::int
    AS ranking,
  COALESCE(w.is_final, false) AS is_final, t.updated_at
FROM dws_user_day_total t LEFT JOIN stategrid_window w ON w.stat_date = t.stat_date
WHERE t.detail_rows > 0;

CREATE TABLE IF NOT EXISTS dws_revision (
  id         BIGSERIAL PRIMARY KEY,
  stat_date  DATE NOT NULL,
  region_id  INT NOT NULL,
  reason     TEXT NOT NULL,
  before     JSONB,
  after      JSONB,
  revised_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Upgrades of sink schemas created by earlier versions.
ALTER TABLE stategrid_checkpoint ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
-- The DWS cursor moved to stategrid_dws_cursor (the next refresh writes it there).
ALTER TABLE stategrid_checkpoint DROP COLUMN IF EXISTS dws_lsn;
-- Applies to pages written from now on (a VACUUM FULL repacks the others).
ALTER TABLE dws_user_day_total SET (fillfactor = 70);

-- One row per `verify` run (command or scheduled workflow): what differed, so status shows the last result.
CREATE TABLE IF NOT EXISTS stategrid_verify_run (
  id          BIGSERIAL PRIMARY KEY,
  pipeline_id TEXT NOT NULL,
  finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  equal       BOOLEAN NOT NULL,
  mismatched  JSONB NOT NULL,
  seconds     NUMERIC(10, 3) NOT NULL
);
CREATE INDEX IF NOT EXISTS stategrid_verify_run_pipeline_idx ON stategrid_verify_run (pipeline_id, id);

-- One row per key or partition `verify --repair` wrote, or left to the stream because the stream changed it after
-- the repair's low watermark (action 'skipped'); verify_run_id is the verify that found the difference.
CREATE TABLE IF NOT EXISTS stategrid_repair (
  id            BIGSERIAL PRIMARY KEY,
  verify_run_id BIGINT NOT NULL,
  pipeline_id   TEXT NOT NULL,
  table_name    TEXT NOT NULL,
  record_key    TEXT NOT NULL,
  action        TEXT NOT NULL CHECK (action IN ('inserted', 'updated', 'deleted', 'recomputed', 'skipped')),
  low_lsn       PG_LSN,
  repaired_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stategrid_repair_run_idx ON stategrid_repair (pipeline_id, verify_run_id);

-- Source columns beyond the fixed table spec, found while streaming or snapshotting (schema evolution): mirrored
-- (a column of the ODS table, written by every row), dropped (gone at the source, kept in ODS, nullable) or
-- skipped (not mirrored; `detail` says why, the values are in ods_change_log). The writers read it.
CREATE TABLE IF NOT EXISTS stategrid_ods_column (
  table_name  TEXT NOT NULL,
  column_name TEXT NOT NULL,
  column_type TEXT,
  state       TEXT NOT NULL CHECK (state IN ('mirrored', 'dropped', 'skipped')),
  detail      TEXT,
  changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, column_name)
);

-- The chunks of a fanned-out initial snapshot (one row per key range of a source table): planned by the activity
-- that holds the exported snapshot, loaded by any worker; done_at is set in the transaction that loads the chunk,
-- so a chunk lost with its worker is loaded again elsewhere and a finished one never twice. attempts counts starts.
CREATE TABLE IF NOT EXISTS stategrid_snapshot_chunk (
  pipeline_id    TEXT NOT NULL,
  snapshot_id    TEXT NOT NULL,
  chunk_no       INT NOT NULL,
  epoch          BIGINT NOT NULL,
  table_name     TEXT NOT NULL,
  after_key      BIGINT,
  up_to_key      BIGINT,
  columns        TEXT[] NOT NULL,
  snapshot_name  TEXT NOT NULL,
  snapshot_lsn   PG_LSN NOT NULL,
  attempts       INT NOT NULL DEFAULT 0,
  loaded_by      TEXT,
  rows           BIGINT,
  dead_letters   BIGINT,
  days           TEXT[],
  max_event_time TEXT,
  planned_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  done_at        TIMESTAMPTZ,
  PRIMARY KEY (pipeline_id, snapshot_id, chunk_no)
);
