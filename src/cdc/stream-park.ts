import type { ReplicationStream } from './replication-stream';

/**
 * Replication streams kept open between capture segments, one per slot, owned by one worker. Reconnecting at every
 * segment made the walsender re-decode from the slot's restart_lsn (up to a running-xacts interval behind), a stall
 * of up to a second after heavy load. The next segment takes a parked stream over when it starts exactly where the
 * stream stands (the sink checkpoint) with the same source and epoch; otherwise, or after `parkMs`, it is closed.
 */
export class StreamPark {
  private readonly parked = new Map<
    string,
    { stream: ReplicationStream; key: string; timer: NodeJS.Timeout }
  >();

  constructor(private readonly parkMs = 5000) {}

  /** The parked stream of `slot` if it continues at `startLsn` under `key`; a parked stream that does not is closed. */
  async take(slot: string, key: string, startLsn: bigint): Promise<ReplicationStream | undefined> {
    const entry = this.parked.get(slot);
    if (!entry) return undefined;
    this.parked.delete(slot);
    clearTimeout(entry.timer);
    if (entry.key === key && entry.stream.canResumeAt(startLsn)) return entry.stream;
    await entry.stream.close();
    return undefined;
  }

  park(slot: string, key: string, stream: ReplicationStream): void {
    const timer = setTimeout(() => {
      if (this.parked.get(slot)?.stream === stream) this.parked.delete(slot);
      void stream.close();
    }, this.parkMs);
    timer.unref();
    this.parked.set(slot, { stream, key, timer });
  }

  /** Closes the parked stream of a slot (before the slot is dropped or re-created). */
  async close(slot: string): Promise<void> {
    const entry = this.parked.get(slot);
    this.parked.delete(slot);
    if (!entry) return;
    clearTimeout(entry.timer);
    await entry.stream.close();
  }

  /** Closes every parked stream (worker shutdown: they would hold the process open). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.parked.keys()].map((slot) => this.close(slot)));
  }
}
