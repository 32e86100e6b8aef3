// The lease rules, pure: no I/O, so the workflow may import this file as well as the activities and drivers.
import {
  DEFAULT_LEASE_POLICY,
  PROVIDER_RESOURCE_DISPOSITIONS,
  type Driver,
  type LeasePolicy,
  type LeaseStatus,
  type ProviderResourceDisposition,
} from './constants.js';
import type { ReleaseRequest, RunRequest } from './run.js';
import type { Environment } from './records.js';

interface LeaseLike {
  status: LeaseStatus;
  leasePolicy: LeasePolicy;
  executionWorkspaceId: string | null;
}

/** How a run ended, as the release step sees it. */
export type ReleaseOutcome = 'succeeded' | 'failed' | 'cancelled' | 'expired';

/**
 * The run's lease policy: the request's, else the environment's (`leasePolicy`; a sandbox config's
 * `reuseLease: true` stands for `reuse_by_environment`), else ephemeral.
 */
export function leasePolicyOf(requested: LeasePolicy | null | undefined, config: Record<string, unknown>): LeasePolicy {
  return (
    requested ??
    (config.leasePolicy as LeasePolicy | undefined) ??
    (config.reuseLease === true ? 'reuse_by_environment' : DEFAULT_LEASE_POLICY)
  );
}

/**
 * The policy the capacity gates see: `reuseLease` left out, as runs started before it named a policy saw it,
 * so a run in flight replays the same gates (a reused resource waits its turn per execution workspace).
 */
export function gatePolicyOf(requested: LeasePolicy | null | undefined, config: Record<string, unknown>): LeasePolicy {
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
 * Which runs share one provider resource, by the lease's policy only: per environment
 * (`reuse_by_environment`), per execution workspace (`reuse_by_execution_workspace`), or none (a fresh one
 * per run).
 */
export function reuseKeyOf(environment: { id: string }, lease: LeaseLike): string | null {
  if (lease.leasePolicy === 'reuse_by_environment') return `env-${environment.id}`;
  if (lease.leasePolicy === 'reuse_by_execution_workspace' && lease.executionWorkspaceId) {
    return `ws-${lease.executionWorkspaceId}`;
  }
  return null;
}

/**
 * Whether releasing the lease keeps its provider resource: as the control plane's disposition says when it
 * gave one (`destroy` frees even a reused resource), else by the policy: a retained lease, or one shared by
 * reuse.
 */
export function keepsResource(
  lease: Pick<LeaseLike, 'status' | 'leasePolicy'>,
  disposition?: ProviderResourceDisposition | null,
): boolean {
  if (disposition) return disposition !== 'destroy';
  return (
    lease.status === 'retained' ||
    lease.leasePolicy === 'reuse_by_environment' ||
    lease.leasePolicy === 'reuse_by_execution_workspace'
  );
}

/**
 * The well-formed part of a release request (the cancel's signal has no validator: anything else in it is
 * dropped); null when it asks nothing.
 */
export function releaseRequestOf(value: unknown): ReleaseRequest | null {
  if (!value || typeof value !== 'object') return null;
  const { cancelActiveWork, providerResourceDisposition: disposition } = value as Record<string, unknown>;
  const request: ReleaseRequest = {
    ...(typeof cancelActiveWork === 'boolean' ? { cancelActiveWork } : {}),
    ...((PROVIDER_RESOURCE_DISPOSITIONS as readonly unknown[]).includes(disposition)
      ? { providerResourceDisposition: disposition as ProviderResourceDisposition }
      : {}),
  };
  return Object.keys(request).length ? request : null;
}

export interface Gate {
  id: string;
  capacity: number;
}

/**
 * Single flight in wait mode (per execution workspace), then admission control (per environment), in the
 * order the run passes them.
 */
export function capacityGates(request: RunRequest, environment: Pick<Environment, 'id' | 'config'>): Gate[] {
  const config = environment.config as { maxConcurrentLeases?: number; singleFlight?: string };
  const gates: Gate[] = [];
  const policy = gatePolicyOf(request.leasePolicy, environment.config);
  if (request.executionWorkspaceId && config.singleFlight === 'wait' && policy === 'ephemeral') {
    gates.push({ id: `envrun-gate/workspace/${request.executionWorkspaceId}`, capacity: 1 });
  }
  if (typeof config.maxConcurrentLeases === 'number') {
    gates.push({ id: `envrun-gate/environment/${environment.id}`, capacity: config.maxConcurrentLeases });
  }
  return gates;
}
