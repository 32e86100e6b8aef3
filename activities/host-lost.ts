import { Context } from '@temporalio/activity';
import { optionalTsToMs } from '@temporalio/common/lib/time.js';
import proto from '@temporalio/proto';
import { ACTIVITY_ACTIONS, hostTaskQueue, leaseEventRow, type EnvironmentLease } from '../contracts/index.js';
import type { ActivityDeps } from './deps.js';

/**
 * How long a host's queue may go without a poll before the host counts as gone. A live worker polls its
 * queue again at least once per long-poll interval (the server's matching.longPollExpirationInterval, one
 * minute by default), so this must be longer than that interval. ENVRUN_HOST_STALE_MS sets it.
 */
export const DEFAULT_HOST_STALE_MS = 90_000;

export function hostStaleMs(deps: ActivityDeps): number {
  const fromEnv = Number(process.env.ENVRUN_HOST_STALE_MS);
  return deps.hostStaleMs ?? (Number.isFinite(fromEnv) && fromEnv > 0 ? fromEnv : DEFAULT_HOST_STALE_MS);
}

/**
 * Whether a worker host is alive: some worker has polled its queue within the stale window (Temporal's
 * DescribeTaskQueue lists the recent pollers of a queue with the time of their last poll).
 */
export async function isHostAlive(deps: ActivityDeps, namespace: string, taskQueue: string, hostId: string) {
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

/** The run's host check: the queue of the run's own task queue family (a local activity of the run). */
export function createHostAlive(deps: ActivityDeps) {
  return async function hostAlive({ hostId }: { hostId: string }): Promise<boolean> {
    const { workflowNamespace, taskQueue } = Context.current().info;
    return isHostAlive(deps, workflowNamespace ?? 'default', taskQueue, hostId);
  };
}

/**
 * Ends an active lease as `lost`: its host is gone. Its resource may still exist there, so its cleanup
 * stays pending: the reaper frees it if the host comes back. Null when the lease was no longer active.
 */
export async function markLeaseLost(deps: ActivityDeps, input: MarkLeaseLostInput): Promise<EnvironmentLease | null> {
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

export function createMarkLeaseLost(deps: ActivityDeps) {
  return async function markLost(input: MarkLeaseLostInput): Promise<EnvironmentLease | null> {
    return markLeaseLost(deps, input);
  };
}
