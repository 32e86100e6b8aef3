import { findOrphanLeases as findOrphans, type OrphanLease } from '../leases/orphans.js';
import { deploymentOf, type ActivityDeps } from './deps.js';

export type { OrphanLease } from '../leases/orphans.js';

/** The reaper's sweep, first half: the leases of this deployment to release (or clean up again), and where. */
export function createFindOrphanLeases(deps: ActivityDeps) {
  return async function findOrphanLeases(): Promise<OrphanLease[]> {
    const destroyable = Object.values(deps.drivers)
      .filter((d) => d?.destroy)
      .map((d) => d!.driver);
    return findOrphans(deps, deploymentOf(), destroyable);
  };
}
