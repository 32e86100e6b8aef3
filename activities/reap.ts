// Releasing a lease whose run can no longer release it (its workflow is closed or gone, or its
// environment is being archived): through its driver, cleanupStatus recorded, the reason logged.
import { ACTIVITY_ACTIONS, type EnvironmentLease } from '../contracts/index.js';
import type { ActivityDeps } from './deps.js';

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
  try {
    if (!environment || !driver) throw new Error(`no driver for environment ${lease.environmentId}`);
    const keep = lease.leasePolicy === 'reuse_by_environment' || lease.leasePolicy === 'reuse_by_execution_workspace';
    await driver.release({ attempt: 1, idempotencyKey: `reap/${lease.id}` }, { environment, lease, keep });
  } catch (err) {
    error = (err as Error).message;
  }
  const cleanupStatus = error ? 'failed' : 'success';
  await deps.store.updateLease(lease.id, { status: 'released', releasedAt: new Date(), failureReason: reason, cleanupStatus });
  await deps.store.logActivity({
    eventKey: `reap/${lease.id}/${ACTIVITY_ACTIONS.leaseReleased}`, companyId: lease.companyId, actorType: 'system', actorId: 'envrun-reaper',
    action: ACTIVITY_ACTIONS.leaseReleased, entityType: 'environment_lease', entityId: lease.id, agentId: null, runId: lease.heartbeatRunId,
    details: { environmentId: lease.environmentId, status: 'released', cleanupStatus, reason, error },
  });
  return { leaseId: lease.id, companyId: lease.companyId, heartbeatRunId: lease.heartbeatRunId, reason, cleanupStatus, error };
}
