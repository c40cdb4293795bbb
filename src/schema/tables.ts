/**
 * The one table spec: columns, types and keys of the source tables and of their ODS and DWD images. The sink's
 * streaming statement, its general batch path and the snapshot load all build their SQL from it.
 */

export type Column = { name: string; type: string };

export type SourceTableSpec = {
  /** Source table, mirrored 1:1 by `ods` (plus _lsn, _op, _synced_at). */
  name: string;
  key: string;
  columns: readonly Column[];
  ods: string;
  dwd: string;
};

const col = (name: string, type: string): Column => ({ name, type });

export const USER_TABLE = {
  name: 'power_user',
  key: 'user_id',
  columns: [
    col('user_id', 'bigint'),
    col('user_name', 'varchar'),
    col('usage_type', 'varchar'),
    col('region_id', 'int'),
    col('region_name', 'varchar'),
    col('update_time', 'timestamp(3)'),
  ],
  ods: 'ods_power_user',
  dwd: 'dwd_power_user_info',
} as const satisfies SourceTableSpec;

export const CONSUMPTION_TABLE = {
  name: 'power_consumption',
  key: 'consumption_id',
  columns: [
    col('consumption_id', 'bigint'),
    col('user_id', 'bigint'),
    col('consumption_amount', 'numeric'),
    col('consumption_cost', 'numeric'),
    col('consumption_date', 'timestamp(3)'),
  ],
  ods: 'ods_power_consumption',
  dwd: 'dwd_power_consumption_detail',
} as const satisfies SourceTableSpec;

/** Source tables in load order: users first, so consumptions join to them as they land. */
export const SOURCE_TABLES = [USER_TABLE.name, CONSUMPTION_TABLE.name] as const;
export type SourceTable = (typeof SOURCE_TABLES)[number];

export const TABLE: Record<SourceTable, SourceTableSpec> = {
  power_user: USER_TABLE,
  power_consumption: CONSUMPTION_TABLE,
};

export const PRIMARY_KEY: Record<SourceTable, string> = {
  power_user: USER_TABLE.key,
  power_consumption: CONSUMPTION_TABLE.key,
};

/** Row metadata every ODS table carries beside the source columns. */
export const ODS_METADATA: readonly Column[] = [col('_lsn', 'pg_lsn'), col('_op', 'char(1)')];

/**
 * Meta fields the statement-per-layer batch path adds to an updated row whose source left values out (see
 * ods.sentOrKept): the columns not sent, and the key of the ODS row that holds their values.
 */
export const UNSENT_METADATA: readonly Column[] = [col('_unsent', 'text[]'), col('_ods_key', 'text')];

/**
 * Names a source column cannot take in its ODS mirror: the row metadata, `_synced_at`, and the fields the batch
 * statements add to the rows they read (`_valid`, UNSENT_METADATA). A source column of such a name is not mirrored
 * (its values stay in the change log).
 */
export const ODS_RESERVED_NAMES: readonly string[] = [
  ...ODS_METADATA.map((c) => c.name),
  '_synced_at',
  '_valid',
  ...UNSENT_METADATA.map((c) => c.name),
];

/** User columns a DWD consumption detail takes from the current valid user row (the LEFT JOIN). */
export const USER_ENRICHMENT = ['user_name', 'region_id', 'region_name', 'usage_type'] as const;

/**
 * Sink tables that hold pipeline data (emptied together by a re-snapshot or a test reset). dws_user_ranking is a
 * view over the per-user day totals (sql/03_sink.sql), emptied with them.
 */
export const LAYER_TABLES = [
  USER_TABLE.ods,
  CONSUMPTION_TABLE.ods,
  USER_TABLE.dwd,
  CONSUMPTION_TABLE.dwd,
  'dws_region_daily_stats',
] as const;
