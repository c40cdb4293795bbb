-- Secondary indexes of DWD detail, applied after 03_sink.sql. An initial snapshot drops them before its bulk load
-- (when the sink role owns the table) and creates the missing ones from this file before the pipeline streams:
-- building an index once over the loaded rows costs far less than inserting every row into it.
CREATE INDEX IF NOT EXISTS dwd_detail_user_idx ON dwd_power_consumption_detail (user_id);
CREATE INDEX IF NOT EXISTS dwd_detail_day_region_idx
  ON dwd_power_consumption_detail ((consumption_date::date), region_id);
-- Orphans (no known region) are counted after every capture segment: this keeps that count off a table scan.
CREATE INDEX IF NOT EXISTS dwd_detail_orphan_idx ON dwd_power_consumption_detail (consumption_id)
  WHERE region_id IS NULL;
