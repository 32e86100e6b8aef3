import {
  ACTIVITY_ACTIONS,
  leaseEventRow,
  type Environment,
  type EnvironmentLease,
  type RunRequest,
} from '../contracts/index.js';
import type { StepContext } from '../drivers/types.js';
import { leasePolicyOf } from '../contracts/lease-policy.js';
import { deploymentOf, driverFor, failureContext, stepContext, tenancyOf, type ActivityDeps } from './deps.js';
import { checkEgressGrants, checkMountSources, TenancyError } from '../config/tenancy.js';
import { NO_CONTEXT, asRunFailure, runFailure } from '../contracts/errors.js';
import { uniqueViolation } from '../store/store.js';

/** The environment by id: the step reads it as it is now (and the history keeps ids, not records). */
export interface AcquireLeaseInput {
  request: RunRequest;
  environmentId: string;
}

/**
 * Step 2. The lease row is claimed first (unique per run, and single-flight per execution workspace), then
 * the driver acquires its resource keyed by the workflow id, so a retry after a crash adopts both the row
 * and the resource instead of making second ones.
 */
export function createAcquireLease(deps: ActivityDeps) {
  return async function acquireLease({ request, environmentId }: AcquireLeaseInput): Promise<EnvironmentLease> {
    const environment = await deps.store.getEnvironment(request.companyId, environmentId);
    if (!environment) {
      throw runFailure('environment_not_found', `environment ${environmentId} not found`, {
        ...NO_CONTEXT,
        environmentId,
      });
    }
    const context = failureContext(deps, environment);
    const driver = driverFor(deps, environment);
    const unsupported = driver.unsupportedReason?.(environment);
    if (unsupported) throw runFailure('unsupported_environment', unsupported, context);
    try {
      await driver.validateConfig(environment.config);
    } catch (err) {
      throw runFailure('unsupported_environment', `environment ${environment.id}: ${(err as Error).message}`, context);
    }
    // A sandbox's read-only mounts are host paths: inside the company's roots, checked as the roots are now;
    // the secrets its egress proxy injects are granted to the company, checked as the grants are now.
    if (environment.driver === 'sandbox') {
      try {
        if (environment.config.mounts !== undefined)
          checkMountSources(tenancyOf(deps), request.companyId, environment.config.mounts);
        checkEgressGrants(tenancyOf(deps), request.companyId, environment.config);
      } catch (err) {
        if (!(err instanceof TenancyError)) throw err;
        throw runFailure('unsupported_environment', `environment ${environment.id}: ${err.message}`, context);
      }
    }
    const leasePolicy = leasePolicyOf(request.leasePolicy, environment.config);
    if (leasePolicy === 'reuse_by_execution_workspace' && !request.executionWorkspaceId) {
      throw runFailure(
        'invalid_request',
        'request.executionWorkspaceId: required by lease policy reuse_by_execution_workspace',
        context,
      );
    }
    // Inserted first (one round trip on the common path); a retry, or a second start of the run, finds its
    // own row by the unique index it hits. Another run's active lease on the workspace is a conflict.
    let lease: EnvironmentLease | null;
    try {
      lease = await deps.store.insertLease({
        companyId: request.companyId,
        environmentId: environment.id,
        executionWorkspaceId: request.executionWorkspaceId,
        issueId: request.issueId,
        heartbeatRunId: request.heartbeatRunId,
        leasePolicy,
        provider: context.provider,
        metadata: null,
        expiresAt: new Date((deps.clock?.() ?? new Date()).getTime() + request.leaseTtlMs),
      });
    } catch (err) {
      const constraint = uniqueViolation(err);
      lease = constraint ? await deps.store.findRunLease(request.companyId, request.heartbeatRunId) : null;
      if (!lease && constraint === 'environment_leases_single_flight' && request.executionWorkspaceId) {
        const holder = await deps.store.findActiveWorkspaceLease(request.executionWorkspaceId);
        throw runFailure(
          'lease_conflict',
          `execution workspace ${request.executionWorkspaceId} is already leased${holder ? ` by run ${holder.heartbeatRunId} (lease ${holder.id})` : ''}`,
          context,
        );
      }
      if (!lease) throw asRunFailure(err, 'lease_acquire_failed', context);
    }
    if (lease.environmentId !== environment.id) {
      throw runFailure(
        'lease_conflict',
        `run ${request.heartbeatRunId} already holds lease ${lease.id} on environment ${lease.environmentId}`,
        context,
      );
    }
    if (lease.status !== 'active') {
      throw runFailure('lease_acquire_failed', `lease ${lease.id} of this run is already ${lease.status}`, context, {
        nonRetryable: true,
      });
    }
    if (lease.providerLeaseId || (lease.metadata && 'acquired' in lease.metadata)) return lease; // adopted on retry
    const step = stepContext();
    let acquired: Awaited<ReturnType<typeof driver.acquire>>;
    try {
      acquired = await driver.acquire(step, { environment, lease, request });
    } catch (err) {
      throw asRunFailure(err, 'lease_acquire_failed', context);
    }
    const patch = {
      provider: acquired.provider,
      providerLeaseId: acquired.providerLeaseId,
      // The provider's own expiry when it has one, else the run's TTL set when the row was written.
      expiresAt: acquired.expiresAt ?? (lease.expiresAt ? new Date(lease.expiresAt) : null),
      metadata: {
        ...(lease.metadata ?? {}),
        ...acquired.metadata,
        acquired: true,
        // The deployment that holds it: a reaper of another deployment sharing the database leaves it alone.
        deployment: deploymentOf(),
        // The resource lives on this host: the run's later steps on it are routed to this host's queue.
        ...(deps.hostId && driver.hostBound?.(environment) ? { hostId: deps.hostId } : {}),
      },
    };
    const logged = leaseEventRow({
      actor: 'run',
      scope: step.idempotencyKey,
      action: ACTIVITY_ACTIONS.leaseAcquired,
      lease: { id: lease.id, companyId: request.companyId, heartbeatRunId: request.heartbeatRunId },
      agentId: request.agentId,
      details: {
        environmentId: environment.id,
        driver: environment.driver,
        leasePolicy: lease.leasePolicy,
        provider: acquired.provider,
        executionWorkspaceId: request.executionWorkspaceId,
        issueId: request.issueId,
      },
    });
    // Only while the lease is still active: a run that gave up (and released or lost the lease) while the
    // provider was still making the resource must not have it recorded on an ended lease, out of sight.
    const updated = await deps.store.updateLease(lease.id, patch, { status: 'active' }, logged);
    if (updated) return updated;
    await freeLateResource(deps, { environment, lease: { ...lease, ...patch, expiresAt: null }, step });
    throw runFailure('lease_acquire_failed', `lease ${lease.id} ended while its resource was being acquired`, context, {
      nonRetryable: true,
    });
  };
}

/**
 * Frees a resource made for a lease that has ended meanwhile. When the provider cannot free it now, the
 * lease records it with `cleanupStatus: failed`, which the reaper retries: no resource is left where
 * nothing looks.
 */
async function freeLateResource(
  deps: ActivityDeps,
  { environment, lease, step }: { environment: Environment; lease: EnvironmentLease; step: StepContext },
): Promise<void> {
  try {
    await driverFor(deps, environment).release(step, { environment, lease, keep: false });
    await deps.store.updateLease(lease.id, { metadata: { ...lease.metadata, lateAcquire: 'freed' } });
  } catch (err) {
    await deps.store.updateLease(lease.id, {
      providerLeaseId: lease.providerLeaseId,
      metadata: { ...lease.metadata, lateAcquire: 'cleanup_failed', cleanupError: (err as Error).message },
      cleanupStatus: 'failed',
    });
  }
}
