import { captureActivities } from './capture';
import type { ActivityDeps } from './deps';
import { setupActivities } from './setup';
import { slotActivities } from './slot';
import { snapshotActivities } from './snapshot';
import { windowActivities } from './windows';

export type { ActivityDeps } from './deps';
export type { CaptureSegmentResult } from './capture';

/** Activities own all I/O. Built once per worker from its dependencies; each concern in its own module. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...setupActivities(deps),
    ...snapshotActivities(deps),
    ...captureActivities(deps),
    ...windowActivities(deps),
    ...slotActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
