import { createAcquireLease } from './acquire-lease.js';
import { createDeleteExpiredCommands } from './delete-expired-commands.js';
import type { ActivityDeps } from './deps.js';
import { createEndedHolders } from './ended-holders.js';
import { createExecCommand } from './exec-command.js';
import { createFindOrphanLeases } from './find-orphan-leases.js';
import { createHostAlive } from './host-alive.js';
import { createLeaseOperation } from './lease-operation.js';
import { createMarkLeaseLost } from './mark-lease-lost.js';
import { createPoolActivities } from './pool.js';
import { createPrepareWorkspace } from './prepare-workspace.js';
import { createReleaseLease } from './release-lease.js';
import { createRenewLease } from './renew-lease.js';
import { createRequestSlot } from './request-slot.js';
import { createResolveEnvironment } from './resolve-environment.js';
import { createSettleCommand } from './settle-command.js';

/**
 * Every activity the workflows schedule, one file each, built over the worker's dependencies (tests pass
 * small real ones). Nothing else is registered: a step no workflow proxies does not belong here.
 */
export function createActivities(deps: ActivityDeps) {
  const pool = createPoolActivities(deps);
  return {
    // The run (workflows/environment-run.ts, its options in workflows/activity-options.ts).
    resolveEnvironment: createResolveEnvironment(deps, pool.takePooled),
    requestSlot: createRequestSlot(deps),
    acquireLease: createAcquireLease(deps),
    prepareWorkspace: createPrepareWorkspace(deps),
    renewLease: createRenewLease(deps),
    hostAlive: createHostAlive(deps),
    markLeaseLost: createMarkLeaseLost(deps),
    execCommand: createExecCommand(deps),
    settleCommand: createSettleCommand(deps),
    releaseLease: createReleaseLease(deps),
    takePooled: pool.takePooled,
    // The warm pool (workflows/warm-pool.ts).
    planPool: pool.planPool,
    fillPool: pool.fillPool,
    retirePooled: pool.retirePooled,
    probePooled: pool.probePooled,
    // The capacity gate, the reaper and operators' operations.
    endedHolders: createEndedHolders(deps),
    findOrphanLeases: createFindOrphanLeases(deps),
    leaseOperation: createLeaseOperation(deps),
    deleteExpiredCommands: createDeleteExpiredCommands(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ActivityDeps } from './deps.js';
