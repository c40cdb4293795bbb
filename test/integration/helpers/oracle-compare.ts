import type pg from 'pg';
import {
  currentDeadLetterLayer,
  finalityLayers,
  ODS_METADATA_VIOLATIONS,
  oracleLayers,
  type OracleInputs,
  type OracleLayer,
} from './oracle';

export type LayerDivergence = { layer: string; missing: number; extra: number };

/**
 * Runs the oracle's comparisons on one database (source and sink together), for the tests and the bench alike.
 * Every query runs with nested loops off: the planner guesses that the oracle's validity tests (CASE … IS NULL)
 * keep 0.5 % of the rows and joins users to consumptions in nested loops, which took 18-100 s per query at 50,000
 * consumptions (hash joins: under a second).
 */
export class OracleCompare {
  constructor(private readonly db: pg.Pool) {}

  private async query<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
    const c = await this.db.connect();
    try {
      await c.query('BEGIN');
      await c.query('SET LOCAL enable_nestloop = off');
      const rows = (await c.query<T>(sql)).rows;
      await c.query('COMMIT');
      return rows;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  /** Oracle rows missing from a layer, and layer rows the oracle does not have. */
  async divergence(l: OracleLayer): Promise<LayerDivergence> {
    const [r] = await this.query<{ missing: string; extra: string }>(
      `SELECT (SELECT count(*) FROM ((${l.expected}) EXCEPT ALL (${l.actual})) m) AS missing,
         (SELECT count(*) FROM ((${l.actual}) EXCEPT ALL (${l.expected})) x) AS extra`,
    );
    return { layer: l.name, missing: Number(r.missing), extra: Number(r.extra) };
  }

  /** A few rows the layer misses and holds beyond the oracle, for failure messages. */
  async samples(l: OracleLayer): Promise<string> {
    const sample = async (a: string, b: string) =>
      (
        await this.query<{ r: string }>(
          `SELECT (d.*)::text AS r FROM ((${a}) EXCEPT ALL (${b})) d ORDER BY 1 LIMIT 5`,
        )
      ).map((r) => r.r);
    return JSON.stringify({
      missing: await sample(l.expected, l.actual),
      extra: await sample(l.actual, l.expected),
    });
  }

  /**
   * Day closes run after the capture segment that saw the day ends, so is_final settles a little after the
   * pipeline has caught up: waits (up to `timeoutMs`) until DWS and the window table agree with the oracle, which
   * re-evaluates the window rules at each look. Days the rules leave open must be provisional at every look.
   */
  async settleWindows(o: OracleInputs, timeoutMs = 60000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let equal = true;
      for (const l of finalityLayers(o)) {
        const d = await this.divergence(l);
        if (d.missing || d.extra) equal = false;
      }
      if (equal) return;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** ODS rows whose _op / _lsn / _synced_at break the rule against the change log (ODS_METADATA_VIOLATIONS). */
  async odsMetadataViolations(): Promise<number> {
    return (await this.query(ODS_METADATA_VIOLATIONS)).length;
  }

  /**
   * Every layer against the oracle, once the windows settle: ODS, DWD, DWS with is_final, the window table, each
   * invalid row's latest dead letter (plus `extra` layers the caller knows of) and ODS metadata.
   */
  async everyLayer(
    o: OracleInputs,
    extra: OracleLayer[] = [],
    settleMs?: number,
  ): Promise<LayerDivergence[]> {
    await this.settleWindows(o, settleMs);
    const out: LayerDivergence[] = [];
    for (const l of [...oracleLayers(o), currentDeadLetterLayer(o), ...extra])
      out.push(await this.divergence(l));
    out.push({
      layer: 'ODS metadata (_op, _lsn, _synced_at)',
      missing: 0,
      extra: await this.odsMetadataViolations(),
    });
    return out;
  }
}

/** The change log as the oracle's `streamed` relation, for a pipeline without a WAL audit. */
export const CHANGE_LOG_AS_STREAMED = `(SELECT commit_lsn, seq AS pos, table_name, op::text AS op, row_data, old_key,
    commit_time FROM ods_change_log)`;
