import type pg from 'pg';
import type { StreamPark } from '../cdc/stream-park';
import type { AppConfig } from '../config';
import type { DwsRefreshers } from '../sink/dws-refresher';
import type { CaptureWorker } from '../workflows/contract';

/** What one worker's activities share: its settings, its sink pool and its worker-local resources. */
export type ActivityDeps = {
  cfg: AppConfig;
  sink: pg.Pool;
  /** Replication streams parked between capture segments on this worker. */
  streams: StreamPark;
  refreshers: DwsRefreshers;
  /** This worker: its identity and the task queue only it polls. */
  worker: CaptureWorker;
};
