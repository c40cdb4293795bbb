import type { WorkflowService } from '@temporalio/client';

export type Poller = { identity: string; lastSeen: string | null };

const TASK_QUEUE_TYPE = { workflow: 1, activity: 2 } as const;

/** The workers polling one side of a task queue (any host), most recently seen first. */
export async function taskQueuePollers(
  service: WorkflowService,
  namespace: string,
  taskQueue: string,
  side: keyof typeof TASK_QUEUE_TYPE,
): Promise<Poller[]> {
  const res = await service.describeTaskQueue({
    namespace,
    taskQueue: { name: taskQueue },
    taskQueueType: TASK_QUEUE_TYPE[side],
  });
  return (res.pollers ?? [])
    .map((p) => ({
      identity: p.identity ?? '?',
      lastSeen: p.lastAccessTime?.seconds
        ? new Date(Number(p.lastAccessTime.seconds) * 1000).toISOString()
        : null,
    }))
    .sort((a, b) => (b.lastSeen ?? '').localeCompare(a.lastSeen ?? ''));
}
