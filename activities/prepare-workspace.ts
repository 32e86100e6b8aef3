import { CancelledFailure, Context } from '@temporalio/activity';
import type {
  EnvironmentLease,
  ExecutionTarget,
  ExecutionWorkspace,
  RealizableRequest,
  RemoteExecutionSpec,
  RunRequest,
  WorkspaceRealizationRecord,
} from '../contracts/index.js';
import {
  ACTIVITY_ACTIONS,
  RealizedExecutionWorkspaceSchema,
  describeZodError,
  leaseEventRow,
} from '../contracts/index.js';
import { asRunFailure, NO_CONTEXT, runFailure, type FailureContext } from '../contracts/errors.js';
import { checkRunPaths, TenancyError } from '../config/tenancy.js';
import {
  realizeWorkspace,
  resolveTarget,
  type Realization,
  type RealizationInput,
  type ResolvedTarget,
} from '../drivers/realize.js';
import { driverFor, failureContext, stepContext, tenancyOf, type ActivityDeps } from './deps.js';

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
 * Steps 3–5 in one activity on the resource's own host: realize the workspace (drivers/realize.ts),
 * persist the realization (with its activity-log row, in one transaction), resolve the execution target.
 * One task-queue round trip instead of three; each part keeps its own error code
 * (workspace_realization_failed, transport_resolution_failed), and the whole is idempotent (a retry
 * realizes again over what is there, rewrites the same rows, resolves the same target).
 */
export function createPrepareWorkspace(deps: ActivityDeps) {
  return async function prepareWorkspace(input: PrepareWorkspaceInput): Promise<PreparedWorkspace> {
    const { request } = input;
    // A database outage as the step starts is waited out too: the step's few attempts are for realizing.
    const [environment, stored, executionWorkspace] = await throughOutage(() =>
      Promise.all([
        deps.store.getEnvironment(request.companyId, input.environmentId),
        deps.store.getLease(request.companyId, input.leaseId),
        request.executionWorkspaceId
          ? deps.store.getExecutionWorkspace(request.companyId, request.executionWorkspaceId)
          : null,
      ]),
    );
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
    const context = failureContext(deps, environment);
    let record: WorkspaceRealizationRecord | null = null;
    let persistedExecutionWorkspace = executionWorkspace;
    if (input.realizes) {
      const realizing = { request: realizable(deps, request, context), environment, lease, executionWorkspace };
      const realized = await realize(deps, realizing, context);
      const realizedRecord = (record = realized.record);
      const held = lease;
      try {
        const stored = await throughOutage(() =>
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
    let target: ResolvedTarget;
    try {
      target = await resolveTarget(driverFor(deps, environment), stepContext(), { environment, lease, record });
    } catch (err) {
      throw asRunFailure(err, 'transport_resolution_failed', context);
    }
    return { lease, realized: record !== null, persistedExecutionWorkspace, ...target };
  };
}

/**
 * Realizes through the driver, heartbeating even while a provision command prints nothing: that is how a
 * cancel reaches this attempt, which is then reported as cancelled, not failed.
 */
async function realize(deps: ActivityDeps, input: RealizationInput, context: FailureContext): Promise<Realization> {
  const driver = driverFor(deps, input.environment);
  const activity = Context.current();
  const step = stepContext();
  const beat = setInterval(() => step.beat(), 1000);
  try {
    return await realizeWorkspace(driver, step, input, deps.provisionTimeoutMs);
  } catch (err) {
    if (activity.cancellationSignal.aborted) throw new CancelledFailure('realization cancelled');
    throw asRunFailure(err, 'workspace_realization_failed', context);
  } finally {
    clearInterval(beat);
  }
}

/**
 * The request with its workspace. A run that realizes on request got its workspace through the realize
 * update, not through the start: it is parsed here, at that edge. Every run's paths are held to its
 * company's workspace roots again here, right before they are used (a link may have changed since).
 */
function realizable(deps: ActivityDeps, request: RunRequest, context: FailureContext): RealizableRequest {
  let workspace = request.workspace;
  if (request.realize === 'on_request' || !workspace) {
    const parsed = RealizedExecutionWorkspaceSchema.safeParse(request.workspace);
    if (!parsed.success) {
      throw runFailure('invalid_request', describeZodError(parsed.error, 'workspace'), context, { nonRetryable: true });
    }
    workspace = parsed.data;
  }
  try {
    checkRunPaths(tenancyOf(deps), request.companyId, workspace);
  } catch (err) {
    if (err instanceof TenancyError) throw runFailure('invalid_request', err.message, context);
    throw err;
  }
  return { ...request, workspace };
}

/** How long the step's reads and its persist wait out a database outage. */
const OUTAGE_WINDOW_MS = 10 * 60_000;

/**
 * A database call with its own retries: an outage must not spend the step's attempts (after a long
 * realization, each would realize again). Heartbeats between tries, so a cancel still arrives.
 */
async function throughOutage<T>(write: () => Promise<T>): Promise<T> {
  const step = stepContext();
  const deadline = Date.now() + OUTAGE_WINDOW_MS;
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
