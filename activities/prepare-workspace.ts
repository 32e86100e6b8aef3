import type {
  EnvironmentLease,
  ExecutionTarget,
  ExecutionWorkspace,
  RemoteExecutionSpec,
  RunRequest,
  WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { ACTIVITY_ACTIONS, leaseEventRow } from '../contracts/index.js';
import { stepContext, type ActivityDeps } from './deps.js';
import { asRunFailure, NO_CONTEXT, runFailure } from './errors.js';
import { realizeCurrent } from './realize-workspace.js';
import { resolveCurrentTarget } from './resolve-target.js';

/** Ids, not records: the step reads the environment, lease and execution workspace as they are now. */
export interface PrepareWorkspaceInput {
  request: RunRequest;
  environmentId: string;
  leaseId: string;
  /** The driver realizes a workspace (ResolvedEnvironment.realizes); else only the target is resolved. */
  realizes: boolean;
  /** The lease's expiry is pushed to now + TTL as the run becomes ready. */
  leaseTtlMs: number;
}

export interface PreparedWorkspace {
  /** The stored lease: once realized, its metadata holds the realization record (carried once, there). */
  lease: EnvironmentLease;
  realized: boolean;
  persistedExecutionWorkspace: ExecutionWorkspace | null;
  executionTarget: ExecutionTarget;
  remoteExecution: RemoteExecutionSpec;
}

/**
 * Steps 3–5 in one activity on the resource's own host: realize the workspace, persist the realization
 * (with its activity-log row, in one transaction), resolve the execution target. One task-queue round
 * trip instead of three; each part keeps its own error code, and the whole is idempotent (a retry realizes
 * again over what is there, rewrites the same rows, resolves the same target).
 */
export function createPrepareWorkspace(deps: ActivityDeps) {
  return async function prepareWorkspace(input: PrepareWorkspaceInput): Promise<PreparedWorkspace> {
    const { request } = input;
    const [environment, stored, executionWorkspace] = await Promise.all([
      deps.store.getEnvironment(request.companyId, input.environmentId),
      deps.store.getLease(request.companyId, input.leaseId),
      request.executionWorkspaceId
        ? deps.store.getExecutionWorkspace(request.companyId, request.executionWorkspaceId)
        : null,
    ]);
    let lease = stored;
    if (!environment || !lease) {
      throw runFailure('workspace_realization_failed', `lease ${input.leaseId} or its environment is gone`, {
        ...NO_CONTEXT,
        environmentId: input.environmentId,
      });
    }
    if (lease.status !== 'active') {
      throw runFailure('workspace_realization_failed', `lease ${lease.id} is ${lease.status}, not active`, NO_CONTEXT, {
        nonRetryable: true,
      });
    }
    let record: WorkspaceRealizationRecord | null = null;
    let persistedExecutionWorkspace = executionWorkspace;
    if (input.realizes) {
      const realized = await realizeCurrent(deps, { request, environment, lease, executionWorkspace });
      const realizedRecord = (record = realized.record);
      const held = lease;
      try {
        const stored = await untilStored(() =>
          deps.store.persistRealization({
            leaseId: held.id,
            companyId: held.companyId,
            executionWorkspaceId: request.executionWorkspaceId,
            request: realized.realizationRequest,
            record: realizedRecord,
            expiresAt: new Date((deps.clock?.() ?? new Date()).getTime() + input.leaseTtlMs),
            log: leaseEventRow({
              actor: 'run',
              scope: stepContext().idempotencyKey,
              action: ACTIVITY_ACTIONS.workspaceRealized,
              lease: held,
              agentId: request.agentId,
              details: {
                environmentId: environment.id,
                driver: environment.driver,
                summary: realizedRecord.summary,
                transport: realizedRecord.transport,
              },
            }),
          }),
        );
        lease = stored.lease;
        persistedExecutionWorkspace = stored.executionWorkspace;
      } catch (err) {
        throw asRunFailure(err, 'workspace_realization_failed', {
          ...NO_CONTEXT,
          environmentId: environment.id,
          driver: environment.driver,
        });
      }
    }
    const target = await resolveCurrentTarget(deps, { environment, lease, record });
    return { lease, realized: record !== null, persistedExecutionWorkspace, ...target };
  };
}

/** A lease without its realization record, for a payload whose reader has the record already. */
export function withoutRecord(lease: EnvironmentLease): EnvironmentLease {
  if (!lease.metadata || !('workspaceRealization' in lease.metadata)) return lease;
  const { workspaceRealization: _record, ...metadata } = lease.metadata;
  return { ...lease, metadata };
}

/** How long persisting waits out a database outage once the workspace is realized. */
const PERSIST_WINDOW_MS = 10 * 60_000;

/**
 * Persists with its own retries: a database outage after a long realization must not spend the step's
 * attempts (each would realize again). Heartbeats between tries, so a cancel still arrives.
 */
async function untilStored<T>(write: () => Promise<T>): Promise<T> {
  const step = stepContext();
  const deadline = Date.now() + PERSIST_WINDOW_MS;
  for (let delay = 200; ; delay = Math.min(delay * 2, 10_000)) {
    try {
      return await write();
    } catch (err) {
      if (Date.now() + delay > deadline || step.signal?.aborted) throw err;
      step.beat();
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
