import { ACTIVITY_ACTIONS, leaseEventRow, type EnvironmentLease } from '../contracts/index.js';
import type { ReapedLease } from '../contracts/reaper.js';
import type { ProbeResult } from '../drivers/providers/contract.js';
import { destroyKeptResource, type DestroyedResource } from '../leases/destroy.js';
import { releaseLease, releaseOrphanLease, type ReleasedLease } from '../leases/release.js';
import { driverFor, type ActivityDeps } from './deps.js';
import { runFailure, NO_CONTEXT } from '../contracts/errors.js';

/**
 * One operation on an environment or a lease's resource that an operator, the admin API or the reaper asks
 * for, run by a worker (on the host that holds the resource when it is host-bound): probe an environment,
 * release a lease whose run is gone (`destroy`: destroy the resource it kept, found orphaned), release a
 * lease kept by `retain_on_failure` (its retention ends: its resource is destroyed), or destroy the
 * resource a lease kept (its environment archived).
 */
export type LeaseOperation =
  | { kind: 'probe'; companyId: string; environmentId: string }
  | { kind: 'releaseOrphan'; companyId: string; leaseId: string; reason: string; destroy?: boolean }
  | { kind: 'releaseRetained'; companyId: string; leaseId: string }
  | { kind: 'destroyKept'; companyId: string; leaseId: string; reason: string; cancelActiveWork: boolean };

export type LeaseOperationResult = ProbeResult | ReapedLease | ReleasedLease | DestroyedResource | null;

export function createLeaseOperation(deps: ActivityDeps) {
  return async function leaseOperation(op: LeaseOperation): Promise<LeaseOperationResult> {
    if (op.kind === 'probe') {
      const environment = await deps.store.getEnvironment(op.companyId, op.environmentId);
      if (!environment)
        throw runFailure('environment_not_found', `environment ${op.environmentId} not found`, NO_CONTEXT);
      const driver = driverFor(deps, environment);
      if (!driver.probe) {
        return {
          ok: true,
          diagnostics: [{ severity: 'info', message: `driver ${environment.driver} has nothing to probe` }],
        };
      }
      return driver.probe(environment);
    }
    const lease = await deps.store.getLease(op.companyId, op.leaseId);
    if (!lease) throw runFailure('lease_release_failed', `lease ${op.leaseId} not found`, NO_CONTEXT);
    if (op.kind === 'destroyKept') {
      return destroyKeptResource(deps, lease, {
        reason: op.reason,
        actor: 'operator',
        scope: 'operator',
        cancelActiveWork: op.cancelActiveWork,
        step: { attempt: 1, idempotencyKey: `lease-destroy/${lease.id}` },
      });
    }
    if (op.kind === 'releaseOrphan') {
      // A resource a release kept, left with nothing to use it (or whose destroy failed): destroyed.
      if (op.destroy || (lease.status !== 'active' && lease.metadata?.kept === true)) {
        return reapKept(deps, lease, op.reason);
      }
      return releaseOrphanLease(deps, lease, op.reason);
    }
    return endRetention(deps, lease);
  };
}

/** The reaper destroys a kept resource found orphaned; null when a run holds it now (nothing reaped). */
async function reapKept(deps: ActivityDeps, lease: EnvironmentLease, reason: string): Promise<ReapedLease | null> {
  const spent = typeof lease.metadata?.destroyAttempts === 'number' ? lease.metadata.destroyAttempts : 0;
  const done = await destroyKeptResource(deps, lease, {
    reason,
    actor: 'reaper',
    scope: 'reaper',
    cancelActiveWork: false,
    step: { attempt: spent + 1, idempotencyKey: `reap/${lease.id}` },
  });
  if (done.outcome === 'skipped_live') return null;
  return {
    leaseId: lease.id,
    companyId: lease.companyId,
    heartbeatRunId: lease.heartbeatRunId,
    reason,
    cleanupStatus: done.outcome === 'destroyed' ? 'success' : 'failed',
    error: done.error,
  };
}

/**
 * A retained lease's retention ends (an operator releases it once inspected): it becomes `released` and the
 * resource it kept is destroyed (`destroyLease`); `environment.lease_released` and
 * `environment.lease_destroyed` are logged. A driver that destroys nothing frees it with its release.
 */
async function endRetention(deps: ActivityDeps, lease: EnvironmentLease): Promise<ReleasedLease> {
  const environment = await deps.store.getEnvironment(lease.companyId, lease.environmentId);
  const driver = environment ? deps.drivers[environment.driver] : undefined;
  const log = (stored: EnvironmentLease, cleanupError: string | null) => ({
    actor: 'operator' as const,
    scope: 'operator',
    lease: stored,
    action: ACTIVITY_ACTIONS.leaseReleased,
    details: {
      environmentId: stored.environmentId,
      status: stored.status,
      cleanupStatus: stored.cleanupStatus,
      outcome: 'retained_release',
      cleanupError,
    },
  });
  const step = { attempt: 1, idempotencyKey: `lease-release/${lease.id}` };
  if (!driver?.destroy || !lease.providerLeaseId) {
    return releaseLease(deps, lease, { endAs: 'released', disposition: 'destroy', step, log });
  }
  const now = deps.clock?.() ?? new Date();
  const claimed = await deps.store.updateLease(
    lease.id,
    { status: 'released', releasedAt: now, lastUsedAt: now },
    { status: lease.status, cleanupStatus: lease.cleanupStatus },
  );
  if (!claimed) {
    const current = await deps.store.getLease(lease.companyId, lease.id);
    return { lease: current ?? lease, error: null, skipped: true };
  }
  const done = await destroyKeptResource(deps, claimed, {
    reason: 'retention ended',
    actor: 'operator',
    scope: 'operator',
    cancelActiveWork: true,
    step,
  });
  const error =
    done.outcome === 'skipped_live' ? `its resource is in use by the active lease ${done.liveLeaseId}` : done.error;
  const stored = (await deps.store.getLease(lease.companyId, lease.id)) ?? claimed;
  await deps.store.logActivity(leaseEventRow(log(stored, error)));
  return { lease: stored, error };
}
