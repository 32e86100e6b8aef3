import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { runWorkflowId, type EnvironmentLease } from '../contracts/index.js';
import { hostLostSignal } from '../contracts/messages.js';
import { isHostAlive, markLeaseLost } from './host-lost.js';
import { deploymentOf, type ActivityDeps } from './deps.js';
import { releaseOrphanLease, type ReapedLease } from '../leases/release.js';

/**
 * The reaper's sweep: every `active` lease whose workflow is closed or missing is released through its
 * driver, and every ended lease whose provider cleanup failed (or was cut short) is cleaned up again once
 * its workflow is closed. One lease's failure never stops the sweep.
 */
export interface OrphanLease {
  companyId: string;
  leaseId: string;
  reason: string;
  /** The host that holds its resource (host-bound leases): it is released there. */
  hostId: string | null;
}

export function createSweepOrphanLeases(deps: ActivityDeps & { temporal?: Client }) {
  return async function sweepOrphanLeases(): Promise<ReapedLease[]> {
    const orphans = await findOrphans(deps);
    const reaped: ReapedLease[] = [];
    for (const orphan of orphans) {
      const lease = await deps.store.getLease(orphan.companyId, orphan.leaseId);
      const done = lease ? await releaseOrphanLease(deps, lease, orphan.reason) : null;
      if (done) reaped.push(done);
    }
    return reaped;
  };
}

/** The reaper's first half: which leases need releasing (or their cleanup retried), and where. */
export function createFindOrphanLeases(deps: ActivityDeps & { temporal?: Client }) {
  return async function findOrphanLeases(): Promise<OrphanLease[]> {
    return findOrphans(deps);
  };
}

async function findOrphans(deps: ActivityDeps & { temporal?: Client }): Promise<OrphanLease[]> {
  {
    const temporal = deps.temporal;
    if (!temporal) throw new Error('the reaper needs a Temporal client in its activity dependencies');
    const orphans: OrphanLease[] = [];
    const candidates = [...(await deps.store.listActiveLeases()), ...(await deps.store.listUnfinishedCleanups())];
    const here = deploymentOf();
    // Whether each host seen is alive, asked once per sweep.
    const alive = new Map<string, Promise<boolean>>();
    const isAlive = (hostId: string) => {
      if (!alive.has(hostId)) alive.set(hostId, isHostAlive(deps, here.namespace, here.taskQueue, hostId));
      return alive.get(hostId)!;
    };
    for (const lease of candidates) {
      // Another deployment's lease (its namespace or task queue differs) is its own reaper's to release.
      const owner = lease.metadata?.deployment as { namespace?: string; taskQueue?: string } | undefined;
      if (owner && (owner.namespace !== here.namespace || owner.taskQueue !== here.taskQueue)) continue;
      const hostId = typeof lease.metadata?.hostId === 'string' ? lease.metadata.hostId : null;
      if (lease.status === 'lost') {
        // Lost with its host: once that host is back, what is left of the resource is freed there.
        if (hostId && (await isAlive(hostId))) {
          orphans.push({ ...ids(lease), reason: `cleanup of a lease lost with host ${hostId}, now back`, hostId });
        }
        continue;
      }
      const handle = temporal.workflow.getHandle(runWorkflowId(lease.companyId, lease.heartbeatRunId ?? ''));
      let reason: string | null = null;
      try {
        const desc = await handle.describe();
        if (desc.status.name === 'RUNNING') {
          // A ready run whose host is gone is told; it fails with environment_host_lost and ends the lease lost.
          if (lease.status === 'active' && hostId && !(await isAlive(hostId))) {
            await handle.signal(hostLostSignal, hostId).catch(() => undefined);
          }
          continue;
        }
        reason =
          lease.status === 'active'
            ? `reaped: run workflow is ${desc.status.name.toLowerCase()}`
            : `cleanup retried: ${lease.cleanupStatus} after the run ended`;
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) continue; // cannot tell: leave it for the next sweep
        reason =
          lease.status === 'active'
            ? 'reaped: run workflow not found'
            : `cleanup retried: ${lease.cleanupStatus}, run workflow not found`;
      }
      if (hostId && !(await isAlive(hostId))) {
        // Its host stays gone: the lease ends lost (its cleanup waits for the host's return).
        if (lease.status === 'active') {
          await markLeaseLost(deps, { ...ids(lease), hostId, scope: 'reaper', actor: 'reaper' });
        }
        continue;
      }
      orphans.push({ ...ids(lease), reason, hostId });
    }
    return orphans;
  }
}

function ids(lease: EnvironmentLease): Pick<OrphanLease, 'companyId' | 'leaseId'> {
  return { companyId: lease.companyId, leaseId: lease.id };
}
