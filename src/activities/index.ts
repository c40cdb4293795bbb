import type { PipelineActivities } from '../workflows/contract';
import { captureActivities } from './capture';
import type { ActivityDeps } from './deps';
import { setupActivities } from './setup';
import { slotActivities } from './slot';
import { snapshotActivities } from './snapshot';
import { snapshotFanOutActivities } from './snapshot-fan-out';
import { verifyActivities } from './verify';
import { windowActivities } from './windows';

export type { ActivityDeps } from './deps';

/** Activities own all I/O. Built once per worker from its dependencies; each concern in its own module. */
export function createActivities(deps: ActivityDeps): PipelineActivities {
  return {
    ...setupActivities(deps),
    ...snapshotActivities(deps),
    ...snapshotFanOutActivities(deps),
    ...captureActivities(deps),
    ...windowActivities(deps),
    ...slotActivities(deps),
    ...verifyActivities(deps),
  };
}

export type Activities = PipelineActivities;
