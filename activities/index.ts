import { createAcquireLease } from './acquire-lease.js';
import { createExecCommand } from './exec-command.js';
import { createHostAlive, createMarkLeaseLost } from './host-lost.js';
import { createPrepareWorkspace } from './prepare-workspace.js';
import { createLeaseOperation } from './lease-operation.js';
import type { ActivityDeps } from './deps.js';
import { createRealizeWorkspace } from './realize-workspace.js';
import { createReleaseLease } from './release-lease.js';
import { createResolveEnvironment } from './resolve-environment.js';
import { createRenewLease } from './renew-lease.js';
import { createEndedHolders, createRequestSlot } from './request-slot.js';
import { createFindOrphanLeases, createSweepOrphanLeases } from './sweep-orphan-leases.js';

/** Every step of a run as an activity, built over the worker's dependencies (tests pass small real ones). */
export function createActivities(deps: ActivityDeps) {
  return {
    resolveEnvironment: createResolveEnvironment(deps),
    acquireLease: createAcquireLease(deps),
    realizeWorkspace: createRealizeWorkspace(deps),
    prepareWorkspace: createPrepareWorkspace(deps),
    releaseLease: createReleaseLease(deps),
    renewLease: createRenewLease(deps),
    sweepOrphanLeases: createSweepOrphanLeases(deps),
    findOrphanLeases: createFindOrphanLeases(deps),
    requestSlot: createRequestSlot(deps),
    endedHolders: createEndedHolders(deps),
    execCommand: createExecCommand(deps),
    leaseOperation: createLeaseOperation(deps),
    hostAlive: createHostAlive(deps),
    markLeaseLost: createMarkLeaseLost(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { ActivityDeps } from './deps.js';
