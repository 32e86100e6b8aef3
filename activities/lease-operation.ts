import { ACTIVITY_ACTIONS } from '../contracts/index.js';
import type { ReapedLease } from '../contracts/reaper.js';
import type { ProbeResult } from '../drivers/providers/contract.js';
import { releaseLease, releaseOrphanLease, type ReleasedLease } from '../leases/release.js';
import { driverFor, type ActivityDeps } from './deps.js';
import { runFailure, NO_CONTEXT } from '../contracts/errors.js';

/**
 * One operation on an environment or a lease's resource that an operator or the admin API asks for, run
 * by a worker (on the host that holds the resource when it is host-bound): probe an environment, release
 * a lease whose run is gone, or release a lease kept by `retain_on_failure`.
 */
export type LeaseOperation =
  | { kind: 'probe'; companyId: string; environmentId: string }
  | { kind: 'releaseOrphan'; companyId: string; leaseId: string; reason: string }
  | { kind: 'releaseRetained'; companyId: string; leaseId: string };

export type LeaseOperationResult = ProbeResult | ReapedLease | ReleasedLease | null;

export function createLeaseOperation(deps: ActivityDeps) {
  return async function leaseOperation(op: LeaseOperation): Promise<LeaseOperationResult> {
    if (op.kind === 'probe') {
      const environment = await deps.store.getEnvironment(op.companyId, op.environmentId);
      if (!environment)
        throw runFailure('environment_not_found', `environment ${op.environmentId} not found`, NO_CONTEXT);
      const driver = driverFor(deps, environment);
      if (!driver.probe) return { ok: true, diagnostics: [`driver ${environment.driver} has nothing to probe`] };
      return driver.probe(environment);
    }
    const lease = await deps.store.getLease(op.companyId, op.leaseId);
    if (!lease) throw runFailure('lease_release_failed', `lease ${op.leaseId} not found`, NO_CONTEXT);
    if (op.kind === 'releaseOrphan') return releaseOrphanLease(deps, lease, op.reason);
    return releaseLease(deps, lease, {
      endAs: 'released',
      destroy: true,
      step: { attempt: 1, idempotencyKey: `lease-release/${lease.id}` },
      log: (stored, cleanupError) => ({
        actor: 'operator',
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
      }),
    });
  };
}
