import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { runWorkflowId } from '../contracts/index.js';
import type { ActivityDeps } from './deps.js';
import { releaseOrphanLease, type ReapedLease } from './reap.js';

/**
 * The reaper's sweep: every `active` lease whose workflow is closed or missing is released through its
 * driver. One lease's failure never stops the sweep.
 */
export function createSweepOrphanLeases(deps: ActivityDeps & { temporal?: Client }) {
  return async function sweepOrphanLeases(): Promise<ReapedLease[]> {
    const temporal = deps.temporal;
    if (!temporal) throw new Error('the reaper needs a Temporal client in its activity dependencies');
    const reaped: ReapedLease[] = [];
    for (const lease of await deps.store.listActiveLeases()) {
      let reason: string | null = null;
      try {
        const desc = await temporal.workflow.getHandle(runWorkflowId(lease.companyId, lease.heartbeatRunId ?? '')).describe();
        if (desc.status.name !== 'RUNNING') reason = `reaped: run workflow is ${desc.status.name.toLowerCase()}`;
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) reason = 'reaped: run workflow not found';
        else continue; // cannot tell: leave it for the next sweep
      }
      if (reason) reaped.push(await releaseOrphanLease(deps, lease, reason));
    }
    return reaped;
  };
}
