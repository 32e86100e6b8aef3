// Releasing a lease whose run can no longer release it (its workflow is closed or gone, or its
// environment is being archived): through its driver, cleanupStatus recorded, the reason logged.
import { ACTIVITY_ACTIONS, type EnvironmentLease } from '../contracts/index.js';
import type { ActivityDeps } from '../activities/deps.js';
import { keepsResource } from './policy.js';

export interface ReapedLease {
  leaseId: string;
  companyId: string;
  heartbeatRunId: string | null;
  reason: string;
  cleanupStatus: 'success' | 'failed';
  error: string | null;
}

export async function releaseOrphanLease(deps: Pick<ActivityDeps, 'store' | 'drivers'>, lease: EnvironmentLease, reason: string): Promise<ReapedLease> {
  const environment = await deps.store.getEnvironment(lease.companyId, lease.environmentId);
  const driver = environment ? deps.drivers[environment.driver] : undefined;
  let error: string | null = null;
  const spent = typeof lease.metadata?.cleanupAttempts === 'number' ? lease.metadata.cleanupAttempts : 0;
  const cleanupAttempt = lease.status === 'active' ? 1 : spent + 1;
  try {
    if (!environment || !driver) throw new Error(`no driver for environment ${lease.environmentId}`);
    // A cleanup retry goes on counting from the attempts already spent on it.
    await driver.release({ attempt: cleanupAttempt, idempotencyKey: `reap/${lease.id}` }, { environment, lease, keep: keepsResource(lease) });
  } catch (err) {
    error = (err as Error).message;
  }
  const cleanupStatus = error ? 'failed' : 'success';
  if (error || lease.status !== 'active') {
    await deps.store.mergeLeaseMetadata(lease.id, { cleanupAttempts: cleanupAttempt, ...(error ? { cleanupError: error } : {}) });
  }
  if (lease.status === 'active') {
    await deps.store.updateLease(lease.id, { status: 'released', releasedAt: new Date(), failureReason: reason, cleanupStatus });
    await deps.store.logActivity({
      eventKey: `reap/${lease.id}/${ACTIVITY_ACTIONS.leaseReleased}`, companyId: lease.companyId, actorType: 'system', actorId: 'envrun-reaper',
      action: ACTIVITY_ACTIONS.leaseReleased, entityType: 'environment_lease', entityId: lease.id, agentId: null, runId: lease.heartbeatRunId,
      details: { environmentId: lease.environmentId, status: 'released', cleanupStatus, reason, error },
    });
  } else {
    // An ended lease keeps its status and reason; only its provider cleanup is tried again. The log gets one
    // row when it finally succeeds (a cleanup that keeps failing shows on the lease and in the sweep result).
    await deps.store.updateLease(lease.id, { cleanupStatus });
    if (cleanupStatus === 'success') {
      await deps.store.logActivity({
        eventKey: `reap/${lease.id}/${ACTIVITY_ACTIONS.leaseCleanedUp}`, companyId: lease.companyId, actorType: 'system', actorId: 'envrun-reaper',
        action: ACTIVITY_ACTIONS.leaseCleanedUp, entityType: 'environment_lease', entityId: lease.id, agentId: null, runId: lease.heartbeatRunId,
        details: { environmentId: lease.environmentId, status: lease.status, cleanupStatus, reason },
      });
    }
  }
  return { leaseId: lease.id, companyId: lease.companyId, heartbeatRunId: lease.heartbeatRunId, reason, cleanupStatus, error };
}
