import type pg from 'pg';
import type { RefreshStats } from '../cdc/ports';
import * as metrics from '../observability/metrics';
import { refreshDirtyPartitions, type DwsWarn } from './aggregates';
import { readCheckpoint } from './checkpoint';

/**
 * Keeps DWS provisional rows current behind the batch sink, on its own cursor: whenever the checkpoint has moved
 * since the last refresh, it recomputes the dirty partitions and advances dws_lsn. It runs beside a capture
 * segment, never in the apply path, so a long refresh does not hold back the flush of small batches (what
 * commit-to-DWD latency would pay). One refresh at a time per pipeline on this worker.
 */
export class DwsRefresher {
  private running: Promise<void> | null = null;
  private loop: Promise<void> | null = null;
  private active = false;
  private failure: unknown;
  private lastStart = 0;
  private seenPosition = '';
  private soon = false;
  private wakeLoop: () => void = () => undefined;
  private stats: RefreshStats = { dwsRefreshes: 0, revisions: 0, refreshMs: 0 };
  private failed: (err: unknown) => void = () => undefined;
  /** Settles with the first refresh failure: the capture segment beside it ends on it. */
  readonly failedOnce = new Promise<never>((_, reject) => (this.failed = reject));

  constructor(
    private readonly pool: pg.Pool,
    private readonly pipelineId: string,
    private readonly warn: DwsWarn,
  ) {
    this.failedOnce.catch(() => undefined);
  }

  /** Starts refreshing every `intervalMs` (or less often, see `due`) until `stop`. */
  start(intervalMs: number): void {
    this.active = true;
    this.loop ??= this.run(intervalMs).finally(() => (this.loop = null));
  }

  /**
   * Stops the loop. With `final` (pause, stop) it waits for the running refresh and refreshes once more, so DWS
   * is current when the pipeline rests; otherwise the running refresh goes on beside the next segment.
   */
  async stop(final: boolean): Promise<void> {
    this.active = false;
    this.wakeLoop();
    await this.loop;
    if (final) {
      await this.running;
      await this.refresh(true);
    }
    // A refresh that failed fails the segment it ran beside.
    if (this.failure) throw this.failure;
  }

  get broken(): boolean {
    return this.failure !== undefined;
  }

  /** Stops the loop and waits for a refresh still running (worker shutdown). */
  async drain(): Promise<void> {
    this.active = false;
    this.wakeLoop();
    await this.loop;
    await this.running;
  }

  /** What was refreshed since the last call. */
  takeStats(): RefreshStats {
    const taken = this.stats;
    this.stats = { dwsRefreshes: 0, revisions: 0, refreshMs: 0 };
    return taken;
  }

  /**
   * Refreshes as soon as no refresh runs, without waiting for the interval: the sink caught up with the stream (a
   * burst ended, or changes trickle in), so this refresh brings DWS level with the source.
   */
  refreshSoon(): void {
    this.soon = true;
    if (!this.running) this.wakeLoop();
  }

  // Looks before the first wait: a segment that follows a snapshot starts with the snapshot's rebuild to do.
  private async run(intervalMs: number) {
    const tick = Math.min(intervalMs, 200);
    while (this.active && !this.failure) {
      if (!this.running && this.due(intervalMs)) {
        this.soon = false;
        this.running = this.refresh(false).finally(() => {
          this.running = null;
          if (this.soon) this.wakeLoop();
        });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, tick);
        this.wakeLoop = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /**
   * Every `intervalMs`, right after the last refresh when it took longer, or at once when asked (refreshSoon): a
   * refresh costs in proportion to the totals it changes, so spacing refreshes out saves work only where the same
   * totals change again and again (one hot day), and it let DWS fall behind by twice a refresh's duration (the wait
   * when refreshes recomputed whole partitions). After the last batch of a burst, waiting for the interval was most
   * of DWS's lag behind DWD (the spread scenario: refreshes of 0.5-0.9 s every 1.0-1.2 s, DWS current 2.1 s after
   * DWD).
   */
  private due(intervalMs: number): boolean {
    return this.soon || Date.now() - this.lastStart >= intervalMs;
  }

  private async refresh(force: boolean): Promise<void> {
    try {
      const cp = await readCheckpoint(this.pool, this.pipelineId);
      if (!cp) throw new Error(`no checkpoint row for pipeline ${this.pipelineId}`);
      const position = `${cp.commit_lsn}/${cp.seq}/${cp.confirmed_lsn}`;
      if (!force && position === this.seenPosition && cp.dws_lsn === cp.confirmed_lsn) return;
      this.seenPosition = position;
      this.lastStart = Date.now();
      const r = await refreshDirtyPartitions(this.pool, this.pipelineId, this.warn);
      this.stats.refreshMs += Date.now() - this.lastStart;
      this.stats.dwsRefreshes += 1;
      this.stats.revisions += r.revisions;
      metrics.dwsRevisions.inc({ pipeline: this.pipelineId }, r.revisions);
      metrics.lateEvents.inc({ pipeline: this.pipelineId }, r.lateEvents ?? 0);
      metrics.dwsLostDeltaPartitions.inc({ pipeline: this.pipelineId }, r.lostDeltaPartitions ?? 0);
    } catch (err) {
      this.failure ??= err;
      this.failed(err);
    }
  }
}

/** This worker's refreshers, one per pipeline, so a refresh still running after its segment is not doubled. */
export class DwsRefreshers {
  private readonly byPipeline = new Map<string, DwsRefresher>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly warn: DwsWarn,
  ) {}

  forPipeline(pipelineId: string): DwsRefresher {
    let refresher = this.byPipeline.get(pipelineId);
    if (!refresher || refresher.broken) {
      refresher = new DwsRefresher(this.pool, pipelineId, (message, fields) =>
        this.warn(message, { pipelineId, ...fields }),
      );
      this.byPipeline.set(pipelineId, refresher);
    }
    return refresher;
  }

  async drainAll(): Promise<void> {
    await Promise.all([...this.byPipeline.values()].map((r) => r.drain()));
  }
}
