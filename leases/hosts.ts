// Worker hosts come and go: whether one is still alive (some worker polls its queue), and ending a lease
// lost with its host. The run's host check, the reaper and the run's own undo use these.
import type { Client } from '@temporalio/client';
import { optionalTsToMs } from '@temporalio/common/lib/time.js';
import proto from '@temporalio/proto';
import { ACTIVITY_ACTIONS, hostTaskQueue, leaseEventRow, type EnvironmentLease } from '../contracts/index.js';
import { readSetting } from '../config/settings.js';
import type { Store } from '../store/store.js';

export interface HostDeps {
  store: Store;
  temporal?: Client;
  clock?: () => Date;
  /** This worker's host (ENVRUN_HOST_ID). */
  hostId?: string;
  /** A host whose queue saw no poll for this long is gone. */
  hostStaleMs?: number;
}

/**
 * How long a host's queue may go without a poll before the host counts as gone. A live worker polls its
 * queue again at least once per long-poll interval (the server's matching.longPollExpirationInterval, one
 * minute by default), so this must be longer than that interval. ENVRUN_HOST_STALE_MS sets it (90 s).
 */
export function hostStaleMs(deps: HostDeps): number {
  return deps.hostStaleMs ?? readSetting('ENVRUN_HOST_STALE_MS');
}

/**
 * Whether a worker host is alive: some worker has polled its queue within the stale window (Temporal's
 * DescribeTaskQueue lists the recent pollers of a queue with the time of their last poll).
 */
export async function isHostAlive(deps: HostDeps, namespace: string, taskQueue: string, hostId: string) {
  if (hostId === deps.hostId) return true; // this worker is that host
  if (!deps.temporal) throw new Error('host checks need a Temporal client in the activity dependencies');
  const described = await deps.temporal.workflowService.describeTaskQueue({
    namespace,
    taskQueue: {
      name: hostTaskQueue(taskQueue, hostId),
      kind: proto.temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL,
    },
    taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  });
  const now = (deps.clock?.() ?? new Date()).getTime();
  const window = hostStaleMs(deps);
  return (described.pollers ?? []).some((p) => {
    const last = optionalTsToMs(p.lastAccessTime);
    return last !== undefined && now - last < window;
  });
}

export interface MarkLeaseLostInput {
  companyId: string;
  leaseId: string;
  hostId: string;
  /** Who found it: the run's workflow id, or 'reaper'. */
  scope: string;
  actor: 'run' | 'reaper';
  agentId?: string | null;
}

/**
 * Ends an active lease as `lost`: its host is gone. Its resource may still exist there, so its cleanup
 * stays pending: the reaper frees it if the host comes back. Null when the lease was no longer active.
 */
export async function markLeaseLost(deps: HostDeps, input: MarkLeaseLostInput): Promise<EnvironmentLease | null> {
  const lease = await deps.store.getLease(input.companyId, input.leaseId);
  if (!lease || lease.status !== 'active') return null;
  const reason = `environment_host_lost: worker host ${input.hostId} is gone`;
  return deps.store.updateLease(
    lease.id,
    { status: 'lost', releasedAt: deps.clock?.() ?? new Date(), failureReason: reason, cleanupStatus: 'pending' },
    { status: 'active' },
    leaseEventRow({
      actor: input.actor,
      scope: input.scope,
      action: ACTIVITY_ACTIONS.leaseLost,
      lease,
      agentId: input.agentId ?? null,
      details: { environmentId: lease.environmentId, hostId: input.hostId, status: 'lost', reason },
    }),
  );
}
