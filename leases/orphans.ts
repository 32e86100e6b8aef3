// The reaper's first half: which leases need releasing (or their cleanup retried), and on which host. A
// lease whose run is gone is released; an ended lease whose provider cleanup failed is cleaned up again
// once its run is closed; a lease whose host is gone ends lost, and is freed there if that host comes back;
// a resource a release kept whose environment is archived is destroyed.
import { WorkflowNotFoundError } from '@temporalio/client';
import { isPooledRunId, poolWorkflowId, runWorkflowId, type EnvironmentLease } from '../contracts/index.js';
import { hostLostSignal } from '../contracts/messages.js';
import { isHostAlive, markLeaseLost, type HostDeps } from './hosts.js';

export interface OrphanLease {
  companyId: string;
  leaseId: string;
  reason: string;
  /** The host that holds its resource (host-bound leases): it is released there. */
  hostId: string | null;
  /** The resource the (ended) lease kept is orphaned: it is destroyed. */
  destroy?: boolean;
}

/** A retired pooled lease whose cleanup is unfinished this long after (its retire step's limit is 10 min). */
const POOLED_CLEANUP_AFTER_MS = 15 * 60_000;

/** The Temporal namespace and task queue a reaper sweeps for: another deployment's leases are its own. */
export interface Deployment {
  namespace: string;
  taskQueue: string;
}

/**
 * `destroyable`: the drivers that destroy what they kept (their kept resources of archived environments
 * are orphans too).
 */
export async function findOrphanLeases(
  deps: HostDeps,
  here: Deployment,
  destroyable: string[] = [],
): Promise<OrphanLease[]> {
  const temporal = deps.temporal;
  if (!temporal) throw new Error('the reaper needs a Temporal client in its dependencies');
  const orphans: OrphanLease[] = [];
  const candidates = [...(await deps.store.listActiveLeases()), ...(await deps.store.listUnfinishedCleanups())];
  // Whether each host seen is alive, asked once per sweep.
  const alive = new Map<string, Promise<boolean>>();
  const isAlive = (hostId: string) => {
    if (!alive.has(hostId)) alive.set(hostId, isHostAlive(deps, here.namespace, here.taskQueue, hostId));
    return alive.get(hostId)!;
  };
  for (const lease of candidates) {
    if (!ownedHere(lease, here)) continue;
    const hostId = typeof lease.metadata?.hostId === 'string' ? lease.metadata.hostId : null;
    if (lease.status === 'lost') {
      // Lost with its host: once that host is back, what is left of the resource is freed there.
      if (hostId && (await isAlive(hostId))) {
        orphans.push({ ...ids(lease), reason: `cleanup of a lease lost with host ${hostId}, now back`, hostId });
      }
      continue;
    }
    // A pooled lease no run took is its pool's: it is an orphan once that pool's workflow has ended. One that
    // ended with its cleanup unfinished (a retire cut short) is the pool's no more: its cleanup is retried
    // once the pool has ended, or once the retire step's time is long past.
    const pooled = isPooledRunId(lease.heartbeatRunId);
    if (pooled && lease.status !== 'active') {
      const poolRunning = await temporal.workflow
        .getHandle(poolWorkflowId(lease.companyId, lease.environmentId))
        .describe()
        .then(
          (d) => d.status.name === 'RUNNING',
          () => false,
        );
      const stale = Date.now() - Date.parse(lease.updatedAt) > POOLED_CLEANUP_AFTER_MS;
      if ((!poolRunning || stale) && (!hostId || (await isAlive(hostId)))) {
        orphans.push({ ...ids(lease), reason: `cleanup retried: ${lease.cleanupStatus} after its retirement`, hostId });
      }
      continue;
    }
    const holder = pooled
      ? poolWorkflowId(lease.companyId, lease.environmentId)
      : runWorkflowId(lease.companyId, lease.heartbeatRunId ?? '');
    const handle = temporal.workflow.getHandle(holder);
    let reason: string | null = null;
    try {
      const desc = await handle.describe();
      if (desc.status.name === 'RUNNING') {
        // An idle pooled sandbox whose host is gone ends lost at once (its pool replaces it).
        if (pooled && lease.status === 'active' && hostId && !(await isAlive(hostId))) {
          await markLeaseLost(deps, { ...ids(lease), hostId, scope: 'reaper', actor: 'reaper' });
          continue;
        }
        // A ready run whose host is gone is told; it fails with environment_host_lost and ends the lease lost.
        if (lease.status === 'active' && hostId && !(await isAlive(hostId))) {
          await handle.signal(hostLostSignal, hostId).catch(() => undefined);
        }
        continue;
      }
      reason =
        lease.status === 'active'
          ? `reaped: ${pooled ? 'pool' : 'run'} workflow is ${desc.status.name.toLowerCase()}`
          : `cleanup retried: ${lease.cleanupStatus} after the run ended`;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) continue; // cannot tell: leave it for the next sweep
      reason =
        lease.status === 'active'
          ? `reaped: ${pooled ? 'pool' : 'run'} workflow not found`
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
  // Kept resources of archived environments (their archive could not destroy them, or a run kept one
  // after): one per resource, through its newest lease, on its host once that host is alive.
  const seen = new Set(orphans.map((o) => o.leaseId));
  const resources = new Set<string>();
  for (const lease of await deps.store.listKeptLeases({ archived: true, drivers: destroyable })) {
    const resource = `${lease.companyId}\n${lease.provider}\n${lease.providerLeaseId}`;
    if (resources.has(resource)) continue;
    resources.add(resource);
    if (seen.has(lease.id) || !ownedHere(lease, here)) continue;
    const hostId = typeof lease.metadata?.hostId === 'string' ? lease.metadata.hostId : null;
    if (hostId && !(await isAlive(hostId))) continue;
    const reason = `destroyed: environment ${lease.environmentId} is archived`;
    orphans.push({ ...ids(lease), reason, hostId, destroy: true });
  }
  return orphans;
}

/** Another deployment's lease (its namespace or task queue differs) is its own reaper's to release. */
function ownedHere(lease: EnvironmentLease, here: Deployment): boolean {
  const owner = lease.metadata?.deployment as { namespace?: string; taskQueue?: string } | undefined;
  return !owner || (owner.namespace === here.namespace && owner.taskQueue === here.taskQueue);
}

function ids(lease: EnvironmentLease): Pick<OrphanLease, 'companyId' | 'leaseId'> {
  return { companyId: lease.companyId, leaseId: lease.id };
}
