import type { Environment, EnvironmentLease, RunRequest } from '../contracts/index.js';
import { leasePolicyOf } from '../leases/policy.js';
import { deploymentOf, driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { asRunFailure, runFailure } from './errors.js';
import { uniqueViolation } from '../store/store.js';

export interface AcquireLeaseInput {
  request: RunRequest;
  environment: Environment;
}

/**
 * Step 2. The lease row is claimed first (unique per run, and single-flight per execution workspace), then
 * the driver acquires its resource keyed by the workflow id, so a retry after a crash adopts both the row
 * and the resource instead of making second ones.
 */
export function createAcquireLease(deps: ActivityDeps) {
  return async function acquireLease({ request, environment }: AcquireLeaseInput): Promise<EnvironmentLease> {
    const context = failureContext(deps, environment);
    const driver = driverFor(deps, environment);
    const unsupported = driver.unsupportedReason?.(environment);
    if (unsupported) throw runFailure('unsupported_environment', unsupported, context);
    try {
      driver.validateConfig(environment.config);
    } catch (err) {
      throw runFailure('unsupported_environment', `environment ${environment.id}: ${(err as Error).message}`, context);
    }
    const leasePolicy = leasePolicyOf(request.leasePolicy, environment.config);
    if (leasePolicy === 'reuse_by_execution_workspace' && !request.executionWorkspaceId) {
      throw runFailure(
        'invalid_request',
        'request.executionWorkspaceId: required by lease policy reuse_by_execution_workspace',
        context,
      );
    }
    let lease = await deps.store.findRunLease(request.companyId, request.heartbeatRunId);
    if (lease && lease.environmentId !== environment.id) {
      throw runFailure(
        'lease_conflict',
        `run ${request.heartbeatRunId} already holds lease ${lease.id} on environment ${lease.environmentId}`,
        context,
      );
    }
    if (!lease) {
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
        if (constraint === 'environment_leases_single_flight' && request.executionWorkspaceId) {
          const holder = await deps.store.findActiveWorkspaceLease(request.executionWorkspaceId);
          throw runFailure(
            'lease_conflict',
            `execution workspace ${request.executionWorkspaceId} is already leased${holder ? ` by run ${holder.heartbeatRunId} (lease ${holder.id})` : ''}`,
            context,
          );
        }
        if (constraint === 'environment_leases_one_per_run') {
          lease = await deps.store.findRunLease(request.companyId, request.heartbeatRunId);
        }
        if (!lease) throw asRunFailure(err, 'lease_acquire_failed', context);
      }
    }
    if (lease.status !== 'active') {
      throw runFailure('lease_acquire_failed', `lease ${lease.id} of this run is already ${lease.status}`, context, {
        nonRetryable: true,
      });
    }
    if (lease.providerLeaseId || (lease.metadata && 'acquired' in lease.metadata)) return lease; // adopted on retry
    try {
      const acquired = await driver.acquire(stepContext(), { environment, lease, request });
      const updated = await deps.store.updateLease(lease.id, {
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
      });
      return updated!;
    } catch (err) {
      throw asRunFailure(err, 'lease_acquire_failed', context);
    }
  };
}
