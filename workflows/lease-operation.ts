// One operation on an environment or a lease's resource, asked for by an operator or the admin API (probe,
// release of an orphaned or retained lease): a workflow on the shared queue whose single activity runs on
// the host that holds the resource, so the caller needs no driver, no provider and no host filesystem.
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { LeaseOperation, LeaseOperationResult } from '../activities/lease-operation.js';
import { hostTaskQueue } from '../contracts/constants.js';

export async function leaseOperation(op: LeaseOperation & { hostId: string | null }): Promise<LeaseOperationResult> {
  const { hostId, ...operation } = op;
  const { leaseOperation: run } = proxyActivities<Activities>({
    startToCloseTimeout: '10m',
    // A host that never picks it up is gone: the operation fails instead of waiting forever.
    ...(hostId ? { taskQueue: hostTaskQueue(workflowInfo().taskQueue, hostId), scheduleToStartTimeout: '2m' } : {}),
    retry: { maximumAttempts: 3, initialInterval: '1s', nonRetryableErrorTypes: ['environment_not_found'] },
    summary: `${operation.kind} ${'leaseId' in operation ? operation.leaseId : operation.environmentId}`,
  });
  return run(operation);
}
