// The one release routine: the release step of a run, the reaper and the admin API all end leases and
// free their provider resources through it, and log through the one activity-log row builder.
import {
  ACTIVITY_ACTIONS,
  PROVIDER_RESOURCE_DISPOSITIONS,
  leaseEventRow,
  type Environment,
  type EnvironmentLease,
  type LeaseEvent,
  type LeaseStatus,
  type ProviderResourceDisposition,
} from '../contracts/index.js';
import type { ReapedLease } from '../contracts/reaper.js';
import type { DriverRegistry } from '../drivers/registry.js';
import type { StepContext } from '../drivers/types.js';
import type { Store } from '../store/store.js';
import { keepsResource, reuseKeyOf } from '../contracts/lease-policy.js';

export interface ReleaseDeps {
  store: Store;
  drivers: DriverRegistry;
  clock?: () => Date;
}

export interface ReleaseOptions {
  /** The status the lease ends with; absent for a lease that has ended already (only its cleanup is retried). */
  endAs?: LeaseStatus;
  /** Stored with `endAs`; absent leaves the lease's reason as it is. */
  failureReason?: string | null;
  /**
   * What becomes of the provider resource, as the control plane asked (absent: the lease policy decides;
   * `destroy` frees even a reused one). Stored on the lease, so a cleanup retried later decides the same.
   */
  disposition?: ProviderResourceDisposition | null;
  /** The provider stops commands still running instead of waiting for them. */
  cancelActiveWork?: boolean;
  /** The driver's step context: the attempt counts cleanup tries, the key makes the release idempotent. */
  step: StepContext;
  /** On a provider error, record `cleanupStatus: failed` now (false: leave it pending for a retry). */
  recordFailure?: boolean;
  /** The activity-log row to write once released, given the stored lease and the cleanup error. */
  log?: (lease: EnvironmentLease, error: string | null) => LeaseEvent | null;
  /** Environments already read by the caller (a run's leases share one). */
  environments?: Map<string, Environment | null>;
}

export interface ReleasedLease {
  lease: EnvironmentLease;
  /** The provider's error when its resource could not be freed, else null. */
  error: string | null;
  /** Someone else released it first: nothing was done. */
  skipped?: boolean;
}

export async function releaseLease(
  deps: ReleaseDeps,
  lease: EnvironmentLease,
  o: ReleaseOptions,
): Promise<ReleasedLease> {
  const { store } = deps;
  const now = deps.clock?.() ?? new Date();
  // Claimed by compare-and-set on the row as read: whoever releases a lease second (a reaper sweep beside
  // the run's own release, two sweeps, an operator) finds it changed and leaves it alone.
  const claimed = o.endAs
    ? await store.updateLease(
        lease.id,
        {
          status: o.endAs,
          releasedAt: o.endAs === 'retained' ? null : now,
          ...(o.failureReason === undefined ? {} : { failureReason: o.failureReason }),
          cleanupStatus: 'pending',
          lastUsedAt: now,
        },
        { status: lease.status, cleanupStatus: lease.cleanupStatus },
      )
    : await store.updateLease(
        lease.id,
        { cleanupStatus: 'pending' },
        { status: lease.status, cleanupStatus: lease.cleanupStatus },
      );
  if (!claimed) {
    const current = await store.getLease(lease.companyId, lease.id);
    return { lease: current ?? lease, error: null, skipped: true };
  }
  lease = claimed;
  if (o.disposition && lease.metadata?.providerResourceDisposition !== o.disposition) {
    lease = (await store.mergeLeaseMetadata(lease.id, { providerResourceDisposition: o.disposition })) ?? lease;
  }
  const environment = await environmentOf(deps, lease, o.environments);
  let error: string | null = null;
  let report: Record<string, unknown> | undefined;
  try {
    const driver = environment ? deps.drivers[environment.driver] : undefined;
    if (!environment) throw new Error(`environment ${lease.environmentId} no longer exists`);
    if (!driver) throw new Error(`no driver for environment ${lease.environmentId}`);
    let keep = keepsResource(lease, o.disposition ?? dispositionOf(lease));
    // A resource another run holds right now is never freed under it: it stays kept.
    const shared = mayBeShared(environment, lease);
    const holder = keep || !shared ? null : await liveHolder(deps, lease);
    if (holder) keep = true;
    const cancelActiveWork = o.cancelActiveWork === true;
    // `stop_and_retain`: the kept resource's work is ended; a resource another run holds is left running.
    const stopKept = keep && !holder && (o.disposition ?? dispositionOf(lease)) === 'stop_and_retain';
    report = (await driver.release(o.step, { environment, lease, keep, cancelActiveWork, stopKept }))?.metadata;
    // What outlives the lease is destroyed later (archive, retention's end, the reaper): it says so here.
    if (driver.destroy && lease.providerLeaseId) {
      report = { ...report, kept: keep, ...(holder ? { keptInUseBy: holder.id } : {}) };
      // A shared resource freed here is no longer kept by the earlier leases that held it.
      if (!keep && shared && lease.provider) {
        const patch = {
          kept: false,
          destroyed: { at: now.toISOString(), reason: `freed by the release of lease ${lease.id}` },
        };
        await store.markResourceDestroyed(lease.companyId, lease.provider, lease.providerLeaseId, patch, now, lease.id);
      }
    }
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  // What the release reports (what a sync-back did not bring back, and why), the cleanup's outcome and its
  // log row go on the lease in one statement.
  const cleanupStatus = !error ? 'success' : o.recordFailure !== false ? 'failed' : null;
  const merge = {
    ...report,
    ...(error && cleanupStatus ? { cleanupError: error, cleanupAttempts: o.step.attempt } : {}),
  };
  const event = o.log?.(cleanupStatus ? { ...lease, cleanupStatus } : lease, error);
  const row = event
    ? leaseEventRow(report ? { ...event, details: { ...event.details, ...report } } : event)
    : undefined;
  if (cleanupStatus || Object.keys(merge).length > 0 || row) {
    lease = (await store.finishCleanup(lease.id, merge, cleanupStatus, row)) ?? lease;
  }
  return { lease, error };
}

/** The disposition a first try of the release stored on the lease, if any. */
function dispositionOf(lease: EnvironmentLease): ProviderResourceDisposition | null {
  const stored = lease.metadata?.providerResourceDisposition as ProviderResourceDisposition | undefined;
  return stored && PROVIDER_RESOURCE_DISPOSITIONS.includes(stored) ? stored : null;
}

/**
 * Whether other leases may hold the lease's resource: a reuse policy, or an environment whose config reused
 * leases before its runs named a policy (runs in flight then).
 */
function mayBeShared(environment: Environment, lease: EnvironmentLease): boolean {
  return reuseKeyOf(environment, lease) !== null || environment.config.reuseLease === true;
}

/** Another active lease on the lease's provider resource. */
async function liveHolder(deps: ReleaseDeps, lease: EnvironmentLease): Promise<EnvironmentLease | null> {
  if (!lease.provider || !lease.providerLeaseId) return null;
  const active = await deps.store.listResourceLeases(lease.companyId, lease.provider, lease.providerLeaseId, [
    'active',
  ]);
  return active.find((l) => l.id !== lease.id) ?? null;
}

async function environmentOf(
  deps: ReleaseDeps,
  lease: EnvironmentLease,
  cache?: Map<string, Environment | null>,
): Promise<Environment | null> {
  if (cache?.has(lease.environmentId)) return cache.get(lease.environmentId)!;
  const environment = await deps.store.getEnvironment(lease.companyId, lease.environmentId);
  cache?.set(lease.environmentId, environment);
  return environment;
}

export type { ReapedLease };

/**
 * Releases a lease whose run can no longer release it (its workflow is closed or gone, or its environment
 * is being archived). An active lease ends `released` with the reason; an ended lease whose cleanup failed
 * keeps its status and only has its resource freed again, counting on from the attempts already spent.
 * Null when another release got to it first.
 */
export async function releaseOrphanLease(
  deps: ReleaseDeps,
  lease: EnvironmentLease,
  reason: string,
): Promise<ReapedLease | null> {
  const wasActive = lease.status === 'active';
  const spent = typeof lease.metadata?.cleanupAttempts === 'number' ? lease.metadata.cleanupAttempts : 0;
  const {
    lease: released,
    error,
    skipped,
  } = await releaseLease(deps, lease, {
    ...(wasActive ? { endAs: 'released' as const, failureReason: reason } : {}),
    step: { attempt: wasActive ? 1 : spent + 1, idempotencyKey: `reap/${lease.id}` },
    log: (stored, err) => {
      const details = {
        environmentId: stored.environmentId,
        status: stored.status,
        cleanupStatus: stored.cleanupStatus,
        reason,
      };
      if (wasActive) {
        return { ...reaperEvent(stored), action: ACTIVITY_ACTIONS.leaseReleased, details: { ...details, error: err } };
      }
      // A cleanup that keeps failing shows on the lease and in the sweep result; the log gets one row when it succeeds.
      return err ? null : { ...reaperEvent(stored), action: ACTIVITY_ACTIONS.leaseCleanedUp, details };
    },
  });
  if (skipped) return null;
  if (!error && !wasActive) await deps.store.mergeLeaseMetadata(lease.id, { cleanupAttempts: spent + 1 });
  return {
    leaseId: lease.id,
    companyId: lease.companyId,
    heartbeatRunId: lease.heartbeatRunId,
    reason,
    cleanupStatus: released.cleanupStatus === 'success' ? 'success' : 'failed',
    error,
  };
}

function reaperEvent(lease: EnvironmentLease): Pick<LeaseEvent, 'actor' | 'scope' | 'lease'> {
  return { actor: 'reaper', scope: 'reaper', lease };
}
