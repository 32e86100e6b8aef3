// The lease rules, pure: no I/O, so the workflow may import this file as well as the activities and drivers.
import { DEFAULT_LEASE_POLICY, type Driver, type LeasePolicy, type LeaseStatus } from './constants.js';

interface LeaseLike {
  status: LeaseStatus;
  leasePolicy: LeasePolicy;
  executionWorkspaceId: string | null;
}

/** How a run ended, as the release step sees it. */
export type ReleaseOutcome = 'succeeded' | 'failed' | 'cancelled' | 'expired';

/** The run's lease policy: the request's, else the environment's, else ephemeral. */
export function leasePolicyOf(requested: LeasePolicy | null | undefined, config: Record<string, unknown>): LeasePolicy {
  return requested ?? (config.leasePolicy as LeasePolicy | undefined) ?? DEFAULT_LEASE_POLICY;
}

/** The provider named on leases, failures and search attributes, from an environment's driver and config. */
export function providerOf(driver: Driver, config: Record<string, unknown>): string | null {
  if (driver === 'local' || driver === 'ssh') return driver;
  const key = driver === 'sandbox' ? config.provider : config.pluginKey;
  return typeof key === 'string' ? key : null;
}

/** A lease's status once its run ended: failed leases are kept for inspection under `retain_on_failure`. */
export function finalLeaseStatus(outcome: ReleaseOutcome, lease: Pick<LeaseLike, 'leasePolicy'>): LeaseStatus {
  if (outcome === 'expired') return 'expired';
  if (outcome === 'failed') return lease.leasePolicy === 'retain_on_failure' ? 'retained' : 'failed';
  return 'released';
}

/**
 * Which runs share one provider resource: per environment (`reuse_by_environment`, or the config's
 * `reuseLease`), per execution workspace (`reuse_by_execution_workspace`), or none (a fresh one per run).
 */
export function reuseKeyOf(environment: { id: string }, lease: LeaseLike, reuseLease: boolean): string | null {
  if (lease.leasePolicy === 'reuse_by_environment' || reuseLease) return `env-${environment.id}`;
  if (lease.leasePolicy === 'reuse_by_execution_workspace' && lease.executionWorkspaceId) {
    return `ws-${lease.executionWorkspaceId}`;
  }
  return null;
}

/** Whether releasing the lease keeps its provider resource: a retained lease, or one shared by reuse. */
export function keepsResource(lease: Pick<LeaseLike, 'status' | 'leasePolicy'>): boolean {
  return (
    lease.status === 'retained' ||
    lease.leasePolicy === 'reuse_by_environment' ||
    lease.leasePolicy === 'reuse_by_execution_workspace'
  );
}
