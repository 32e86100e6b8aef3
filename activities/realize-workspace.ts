import { CancelledFailure, Context } from '@temporalio/activity';
import type {
  DriverRealization,
  Environment,
  EnvironmentLease,
  ExecutionWorkspace,
  RealizableRequest,
  RunRequest,
  WorkspaceRealizationRecord,
  WorkspaceRealizationRequest,
} from '../contracts/index.js';
import {
  ExecutionWorkspaceRuntimeConfig,
  RealizedExecutionWorkspaceSchema,
  WorkspaceRealizationRecordSchema,
  describeZodError,
} from '../contracts/index.js';
import { currentEnvironment, driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { asRunFailure, runFailure, type FailureContext } from './errors.js';
import { checkRunPaths } from './resolve-environment.js';

export interface RealizeWorkspaceInput {
  request: RunRequest;
  environment: Environment;
  lease: EnvironmentLease;
  executionWorkspace: ExecutionWorkspace | null;
}

export interface RealizeWorkspaceOutput {
  realizationRequest: WorkspaceRealizationRequest;
  record: WorkspaceRealizationRecord;
}

const DEFAULT_PROVISION_TIMEOUT_MS = 10 * 60_000;

/** The version-1 realization request: the run's source plus the runtime overlay (request over workspace config). */
export function buildRealizationRequest(
  input: RealizeWorkspaceInput & { request: RealizableRequest },
): WorkspaceRealizationRequest {
  const { request, environment, executionWorkspace } = input;
  const stored = ExecutionWorkspaceRuntimeConfig.safeParse(executionWorkspace?.metadata?.config ?? {});
  const config = stored.success ? stored.data : {};
  const overlay = request.runtimeOverlay;
  const ws = request.workspace;
  return {
    version: 1,
    adapterType: request.adapterType,
    companyId: request.companyId,
    environmentId: environment.id,
    executionWorkspaceId: request.executionWorkspaceId,
    issueId: request.issueId,
    heartbeatRunId: request.heartbeatRunId,
    requestedMode: request.requestedMode,
    source: {
      kind: ws.source,
      localPath: ws.cwd,
      projectId: ws.projectId,
      projectWorkspaceId: ws.workspaceId,
      repoUrl: ws.repoUrl,
      repoRef: ws.repoRef,
      strategy: ws.strategy,
      branchName: ws.branchName,
      worktreePath: ws.worktreePath,
    },
    runtimeOverlay: {
      provisionCommand: overlay.provisionCommand ?? config.provisionCommand ?? null,
      teardownCommand: overlay.teardownCommand ?? config.teardownCommand ?? null,
      cleanupCommand: overlay.cleanupCommand ?? config.cleanupCommand ?? null,
    },
  };
}

/**
 * Step 3: make the workspace exist where the run executes and run the provision command there. A driver
 * that returns no record fails the step: a run must never become ready with nothing persisted.
 */
export function createRealizeWorkspace(deps: ActivityDeps) {
  return async function realizeWorkspace(original: RealizeWorkspaceInput): Promise<RealizeWorkspaceOutput> {
    return realizeCurrent(deps, { ...original, environment: await currentEnvironment(deps, original.environment) });
  };
}

/** Realizes with the environment as given: the caller has just read it. */
export async function realizeCurrent(
  deps: ActivityDeps,
  original: RealizeWorkspaceInput,
): Promise<RealizeWorkspaceOutput> {
  const { environment } = original;
  const context = failureContext(deps, environment);
  const input = { ...original, environment, request: realizable(deps, original.request, context) };
  const driver = driverFor(deps, input.environment);
  if (!driver.realize) {
    throw runFailure('workspace_realization_failed', `driver ${driver.driver} does not realize workspaces`, context, {
      nonRetryable: true,
    });
  }
  const realizationRequest = buildRealizationRequest(input);
  const provisionTimeoutMs =
    input.request.provisionTimeoutMs ??
    (input.environment.config.provisionTimeoutMs as number | undefined) ??
    deps.provisionTimeoutMs ??
    DEFAULT_PROVISION_TIMEOUT_MS;
  let record: DriverRealization | null;
  // Heartbeat even while a provision command prints nothing: that is how a cancel reaches this attempt.
  const activity = Context.current();
  const step = stepContext();
  const beat = setInterval(() => step.beat(), 1000);
  try {
    record = await driver.realize(step, { ...input, realizationRequest, provisionTimeoutMs });
  } catch (err) {
    if (activity.cancellationSignal.aborted) throw new CancelledFailure('realization cancelled'); // reported as cancelled, not failed
    throw asRunFailure(err, 'workspace_realization_failed', context);
  } finally {
    clearInterval(beat);
  }
  if (!record) {
    throw runFailure(
      'workspace_realization_failed',
      `driver ${driver.driver} returned no workspace realization record`,
      context,
    );
  }
  const checked = WorkspaceRealizationRecordSchema.safeParse({ ...record, driver: environment.driver });
  if (!checked.success) {
    throw runFailure(
      'workspace_realization_failed',
      `driver ${driver.driver} returned an invalid realization record: ${describeZodError(checked.error, 'record')}`,
      context,
      { nonRetryable: true },
    );
  }
  return { realizationRequest, record: checked.data };
}

/**
 * The request with its workspace. A run that realizes on request got its workspace through the realize
 * update, not through the start: it is parsed and held to the workspace roots here, at that edge.
 */
function realizable(deps: ActivityDeps, request: RunRequest, context: FailureContext): RealizableRequest {
  if (request.realize !== 'on_request' && request.workspace) return { ...request, workspace: request.workspace };
  const parsed = RealizedExecutionWorkspaceSchema.safeParse(request.workspace);
  if (!parsed.success) {
    throw runFailure('invalid_request', describeZodError(parsed.error, 'workspace'), context, { nonRetryable: true });
  }
  checkRunPaths(deps, parsed.data, context);
  return { ...request, workspace: parsed.data };
}
