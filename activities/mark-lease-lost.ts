import type { EnvironmentLease } from '../contracts/index.js';
import { markLeaseLost, type MarkLeaseLostInput } from '../leases/hosts.js';
import type { ActivityDeps } from './deps.js';

export type { MarkLeaseLostInput } from '../leases/hosts.js';

/** The run's host is gone: its active lease ends `lost` (null when it was no longer active). */
export function createMarkLeaseLost(deps: ActivityDeps) {
  return async function markLost(input: MarkLeaseLostInput): Promise<EnvironmentLease | null> {
    return markLeaseLost(deps, input);
  };
}
