import type { Environment, EnvironmentLease } from '../contracts/index.js';

/**
 * Which runs share one provider resource: per environment (`reuse_by_environment`, or the config's
 * `reuseLease`), per execution workspace (`reuse_by_execution_workspace`), or none (a fresh one per run).
 */
export function reuseKeyOf(environment: Environment, lease: EnvironmentLease, reuseLease: boolean): string | null {
  if (lease.leasePolicy === 'reuse_by_environment' || reuseLease) return `env-${environment.id}`;
  if (lease.leasePolicy === 'reuse_by_execution_workspace' && lease.executionWorkspaceId) return `ws-${lease.executionWorkspaceId}`;
  return null;
}

/** Whether releasing the lease keeps its provider resource: a retained lease, or one shared by reuse. */
export function keepsResource(lease: EnvironmentLease): boolean {
  return lease.status === 'retained' || lease.leasePolicy === 'reuse_by_environment' || lease.leasePolicy === 'reuse_by_execution_workspace';
}
