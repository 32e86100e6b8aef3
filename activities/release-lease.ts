import { Context } from '@temporalio/activity';
import type { Environment, EnvironmentLease, LeaseStatus } from '../contracts/index.js';
import { driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { keepsResource } from '../leases/policy.js';
import { NO_CONTEXT, runFailure } from './errors.js';

export type ReleaseOutcome = 'succeeded' | 'failed' | 'cancelled' | 'expired';

export interface ReleaseLeaseInput {
  companyId: string;
  heartbeatRunId: string;
  /** The lease the workflow knows it holds (null when acquire never answered). */
  leaseId: string | null;
  outcome: ReleaseOutcome;
  failureReason: string | null;
  /** On this attempt a provider that still fails is recorded as `cleanupStatus: failed` instead of retried. */
  finalAttempt: number;
}

export interface CleanupFailure {
  leaseId: string;
  message: string;
}

export interface ReleaseLeaseOutput {
  leases: EnvironmentLease[];
  cleanupFailures: CleanupFailure[];
}

export function finalLeaseStatus(outcome: ReleaseOutcome, lease: EnvironmentLease): LeaseStatus {
  if (outcome === 'expired') return 'expired';
  if (outcome === 'failed') return lease.leasePolicy === 'retain_on_failure' ? 'retained' : 'failed';
  return 'released';
}

/**
 * Step 7, always run: every lease of the run gets its final status, then its provider resource is freed.
 * One lease's provider error never stops the others (the reference stopped at the first). A provider that
 * fails is retried by the activity's policy; on the final attempt its lease is recorded `cleanupStatus:
 * failed` and reported, so the workflow ends with `lease_cleanup_failed` instead of losing the error.
 */
export function createReleaseLease(deps: ActivityDeps) {
  const now = () => deps.clock?.() ?? new Date();
  return async function releaseLease(input: ReleaseLeaseInput): Promise<ReleaseLeaseOutput> {
    const { store } = deps;
    const all = await store.listRunLeases(input.companyId, input.heartbeatRunId);
    if (input.leaseId && !all.some((l) => l.id === input.leaseId)) {
      throw runFailure('lease_release_failed', `lease ${input.leaseId} of run ${input.heartbeatRunId} no longer exists`, NO_CONTEXT, { nonRetryable: true });
    }
    const attempt = Context.current().info.attempt;
    const cleanupFailures: CleanupFailure[] = [];
    const retryable: string[] = [];
    const environments = new Map<string, Environment | null>();
    const result: EnvironmentLease[] = [];
    for (const original of all) {
      let lease = original;
      if (lease.status !== 'active' && lease.cleanupStatus !== 'pending') {
        result.push(lease);
        continue;
      }
      if (lease.status === 'active') {
        const status = finalLeaseStatus(input.outcome, lease);
        lease = (await store.updateLease(lease.id, {
          status,
          releasedAt: status === 'retained' ? null : now(),
          failureReason: input.outcome === 'succeeded' ? null : (input.failureReason ?? input.outcome),
          cleanupStatus: 'pending',
          lastUsedAt: now(),
        }))!;
      }
      if (!environments.has(lease.environmentId)) {
        environments.set(lease.environmentId, await store.getEnvironment(lease.companyId, lease.environmentId));
      }
      const environment = environments.get(lease.environmentId);
      try {
        if (!environment) throw new Error(`environment ${lease.environmentId} no longer exists`);
        await driverFor(deps, environment).release(stepContext(), { environment, lease, keep: keepsResource(lease) });
        lease = (await store.updateLease(lease.id, { cleanupStatus: 'success' }))!;
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (attempt < input.finalAttempt) {
          retryable.push(`${lease.id}: ${message}`);
        } else {
          lease = (await store.mergeLeaseMetadata(lease.id, { cleanupError: message, cleanupAttempts: attempt }))!;
          lease = (await store.updateLease(lease.id, { cleanupStatus: 'failed' }))!;
          cleanupFailures.push({ leaseId: lease.id, message });
        }
      }
      result.push(lease);
    }
    if (retryable.length > 0) {
      const env = environments.values().next().value ?? null;
      throw runFailure('lease_cleanup_failed', `provider cleanup failed: ${retryable.join('; ')}`, env ? failureContext(deps, env) : NO_CONTEXT, { nonRetryable: false });
    }
    return { leases: result, cleanupFailures };
  };
}
