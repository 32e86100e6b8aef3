// Destroying a provider resource that outlived its lease (a reused resource, a retained one, one a
// disposition kept) once nothing will use it again: its environment is archived, its retention ends, or the
// reaper finds it orphaned. A resource a live run holds is never destroyed under it.
import { ACTIVITY_ACTIONS, leaseEventRow, type Actor, type EnvironmentLease } from '../contracts/index.js';
import type { StepContext } from '../drivers/types.js';
import type { ReleaseDeps } from './release.js';

export interface DestroyOptions {
  /** Why (archived, retention ended, orphaned): on the leases and the log row. */
  reason: string;
  actor: Actor;
  /** What makes the log row's event key unique besides the action and the lease. */
  scope: string;
  /** The provider stops commands still running instead of waiting for them. */
  cancelActiveWork: boolean;
  step: StepContext;
}

export interface DestroyedResource {
  /** The lease asked about. */
  leaseId: string;
  companyId: string;
  heartbeatRunId: string | null;
  providerLeaseId: string | null;
  /** `skipped_live`: a run holds the resource now; nothing was done. */
  outcome: 'destroyed' | 'failed' | 'skipped_live';
  /** The ended leases recorded as no longer holding it (a reused resource has one per run). */
  leaseIds: string[];
  /** The active lease that holds it, when skipped. */
  liveLeaseId: string | null;
  error: string | null;
}

/**
 * Destroys the provider resource `lease` kept, through its driver's `destroy`, and records it on every
 * ended lease that held it (`metadata.kept: false`, `metadata.destroyed`, the provider's receipt as
 * `metadata.termination`, cleanup `success`; a retained lease becomes `released`) with one
 * `environment.lease_destroyed` row. A failure is recorded on the lease (`cleanupStatus: failed`,
 * `metadata.destroyError`), which stays kept: the reaper tries again.
 */
export async function destroyKeptResource(
  deps: ReleaseDeps,
  lease: EnvironmentLease,
  o: DestroyOptions,
): Promise<DestroyedResource> {
  const { store } = deps;
  const result = (outcome: DestroyedResource['outcome'], extra: Partial<DestroyedResource> = {}) => ({
    leaseId: lease.id,
    companyId: lease.companyId,
    heartbeatRunId: lease.heartbeatRunId,
    providerLeaseId: lease.providerLeaseId,
    outcome,
    leaseIds: [],
    liveLeaseId: null,
    error: null,
    ...extra,
  });
  const { provider, providerLeaseId } = lease;
  const holders =
    provider && providerLeaseId ? await store.listResourceLeases(lease.companyId, provider, providerLeaseId) : [lease];
  const live = holders.find((l) => l.status === 'active');
  if (live) return result('skipped_live', { liveLeaseId: live.id });

  // The newest lease on the resource carries the provider's freshest record of it.
  const newest = holders.find((l) => l.status !== 'lost') ?? lease;
  let error: string | null = null;
  let report: Record<string, unknown> = {};
  try {
    const environment = await store.getEnvironment(lease.companyId, lease.environmentId);
    if (!environment) throw new Error(`environment ${lease.environmentId} no longer exists`);
    const driver = deps.drivers[environment.driver];
    if (!driver?.destroy) throw new Error(`the ${environment.driver} driver keeps no resource to destroy`);
    if (provider && providerLeaseId) {
      report =
        (await driver.destroy(o.step, { environment, lease: newest, cancelActiveWork: o.cancelActiveWork }))
          ?.metadata ?? {};
    }
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  if (error) {
    const attempts = typeof lease.metadata?.destroyAttempts === 'number' ? lease.metadata.destroyAttempts : 0;
    await store.mergeLeaseMetadata(lease.id, { destroyError: error, destroyAttempts: attempts + 1 });
    await store.updateLease(lease.id, { cleanupStatus: 'failed' });
    return result('failed', { error });
  }

  const now = deps.clock?.() ?? new Date();
  const destroyed = { at: now.toISOString(), reason: o.reason };
  const patch = { kept: false, destroyed, ...report };
  const leaseIds =
    provider && providerLeaseId
      ? await store.markResourceDestroyed(lease.companyId, provider, providerLeaseId, patch, now)
      : [];
  if (!leaseIds.includes(lease.id)) {
    await store.mergeLeaseMetadata(lease.id, patch);
    leaseIds.push(lease.id);
  }
  await store.logActivity(
    leaseEventRow({
      actor: o.actor,
      scope: o.scope,
      action: ACTIVITY_ACTIONS.leaseDestroyed,
      lease,
      details: {
        environmentId: lease.environmentId,
        providerLeaseId,
        reason: o.reason,
        leases: leaseIds.length,
        cancelActiveWork: o.cancelActiveWork,
        ...report,
      },
    }),
  );
  return result('destroyed', { leaseIds });
}
