import { Context } from '@temporalio/activity';
import { isHostAlive } from '../leases/hosts.js';
import type { ActivityDeps } from './deps.js';

/** The run's host check: the queue of the run's own task queue family (a local activity of the run). */
export function createHostAlive(deps: ActivityDeps) {
  return async function hostAlive({ hostId }: { hostId: string }): Promise<boolean> {
    const { workflowNamespace, taskQueue } = Context.current().info;
    return isHostAlive(deps, workflowNamespace ?? 'default', taskQueue, hostId);
  };
}
