import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of the worker process, served on STATEGRID_METRICS_PORT (0 disables the endpoint). */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'stategrid_worker_' });

export const rowsApplied = new Counter({
  name: 'stategrid_rows_applied_total',
  help: 'Source changes applied to ODS/DWD, per source table',
  labelNames: ['pipeline', 'table'] as const,
  registers: [registry],
});
export const deadLetters = new Counter({
  name: 'stategrid_dead_letters_total',
  help: 'Invalid changes sent to the dead-letter table',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const dwsRevisions = new Counter({
  name: 'stategrid_dws_revisions_total',
  help: 'Revisions of closed days caused by late changes',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const lateEvents = new Counter({
  name: 'stategrid_late_events_total',
  help: 'Changes that arrived for a day whose window was already closed (corrected, never dropped)',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const dwsLostDeltaPartitions = new Counter({
  name: 'stategrid_dws_lost_delta_partitions_total',
  help: 'DWS partitions rebuilt from DWD because a crash of the sink database emptied their unlogged deltas',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const slotLagBytes = new Gauge({
  name: 'stategrid_slot_lag_bytes',
  help: 'WAL between the source insert position and the slot confirmed position',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
// PostgreSQL counts these since the slot's statistics were reset; the worker copies its figures after each segment.
export const slotDecodedBytes = new Gauge({
  name: 'stategrid_slot_decoded_bytes',
  help: "Bytes of changes the slot's walsenders decoded (pg_stat_replication_slots.total_bytes)",
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const slotSpilledBytes = new Gauge({
  name: 'stategrid_slot_spilled_bytes',
  help: 'Bytes of decoded changes spilled to disk: transactions larger than STATEGRID_DECODING_WORK_MEM_MB',
  labelNames: ['pipeline'] as const,
  registers: [registry],
});
export const verifyMismatched = new Gauge({
  name: 'stategrid_verify_mismatched_rows',
  help: 'Keys (ODS, DWD) or partitions (DWS) that differed from the source in the last verify',
  labelNames: ['pipeline', 'layer'],
  registers: [registry],
});

export const verifyLastRun = new Gauge({
  name: 'stategrid_verify_last_run_timestamp_seconds',
  help: 'When the last verify of the pipeline finished (Unix time)',
  labelNames: ['pipeline'],
  registers: [registry],
});

export const activitiesRunning = new Gauge({
  name: 'stategrid_activities_running',
  help: 'Activities this worker is executing now, per activity type',
  labelNames: ['activity'] as const,
  registers: [registry],
});

/** Every series of this process carries its worker identity, so several workers can be scraped side by side. */
export function labelWorker(identity: string): void {
  registry.setDefaultLabels({ worker: identity });
}

/** The same activities, each counted in `stategrid_activities_running` while it executes. */
export function countRunning<T extends object>(activities: T): T {
  const counted: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    counted[name] = async (...args: unknown[]) => {
      activitiesRunning.inc({ activity: name });
      try {
        return await (fn as (...a: unknown[]) => Promise<unknown>)(...args);
      } finally {
        activitiesRunning.dec({ activity: name });
      }
    };
  }
  return counted as T;
}

export const repairs = new Counter({
  name: 'stategrid_repairs_total',
  help: 'Rows written, DWS partitions recomputed and keys left to the stream by verify --repair',
  labelNames: ['pipeline', 'table', 'action'] as const,
  registers: [registry],
});

export const batchSeconds = new Histogram({
  name: 'stategrid_batch_seconds',
  help: 'Time to write one batch (ODS, change log, DWD, checkpoint) in one sink transaction',
  labelNames: ['pipeline'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

export function serveMetrics(
  port: number,
  onListen: (port: number) => void,
  onError: (err: Error) => void,
): http.Server | undefined {
  if (port === 0) return undefined;
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  // A busy port must not stop the worker: it keeps applying changes without the endpoint.
  server.on('error', onError);
  server.listen(port, '127.0.0.1', () => onListen(port));
  return server;
}
