import type { EnvironmentLease } from '../contracts/index.js';
import type { ActivityDeps } from './deps.js';
import { NO_CONTEXT, runFailure } from '../contracts/errors.js';

export interface RenewLeaseInput {
  companyId: string;
  leaseId: string;
  ttlMs: number;
}

/** The control plane is alive: the lease's expiry moves to now + TTL. */
export function createRenewLease(deps: ActivityDeps) {
  return async function renewLease(input: RenewLeaseInput): Promise<EnvironmentLease> {
    const now = deps.clock?.() ?? new Date();
    const lease = await deps.store.getLease(input.companyId, input.leaseId);
    if (!lease || lease.status !== 'active') {
      throw runFailure(
        'lease_release_failed',
        `lease ${input.leaseId} is ${lease?.status ?? 'gone'}; it cannot be renewed`,
        NO_CONTEXT,
        { nonRetryable: true },
      );
    }
    return (await deps.store.updateLease(input.leaseId, {
      expiresAt: new Date(now.getTime() + input.ttlMs),
      lastUsedAt: now,
    }))!;
  };
}
