import { parseLsn } from '../cdc/changes';
import { emitWaitMarker } from '../cdc/source-admin';
import type { AppConfig } from '../config';
import { withClient } from '../db/client';
import { readCheckpoint } from '../sink/checkpoint';

/**
 * `stategrid wait`: writes a marker into the source WAL, then waits until the pipeline has applied everything
 * before it to ODS/DWD (confirmed) and refreshed DWS after that (dws_lsn).
 */
export async function waitCaughtUp(cfg: AppConfig, pipelineId: string, timeoutMs: number): Promise<boolean> {
  const marker = parseLsn(await emitWaitMarker(cfg.sourceUrl));
  return withClient(cfg.sinkUrl, async (sink) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const cp = await readCheckpoint(sink, pipelineId);
      if (
        cp &&
        cp.phase === 'streaming' &&
        parseLsn(cp.confirmed_lsn) >= marker &&
        parseLsn(cp.dws_lsn) >= marker
      ) {
        return true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  });
}
