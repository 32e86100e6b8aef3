// Realizing a run's workspace and resolving its execution target through the environment's driver, with
// what the driver returns checked before anything is stored. The prepare step (activities/
// prepare-workspace.ts) calls these and gives their failures its error codes: a NonRetryableError fails it
// at once, anything else is retried by its policy.
import {
  ExecutionTargetSchema,
  ExecutionWorkspaceRuntimeConfig,
  WorkspaceRealizationRecordSchema,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type ExecutionTarget,
  type ExecutionWorkspace,
  type RealizableRequest,
  type RemoteExecutionSpec,
  type WorkspaceRealizationRecord,
  type WorkspaceRealizationRequest,
} from '../contracts/index.js';
import { NonRetryableError } from '../contracts/errors.js';
import type { EnvironmentDriver, LeaseRef, StepContext } from './types.js';

export const DEFAULT_PROVISION_TIMEOUT_MS = 10 * 60_000;

export interface RealizationInput {
  request: RealizableRequest;
  environment: Environment;
  lease: EnvironmentLease;
  executionWorkspace: ExecutionWorkspace | null;
}

export interface Realization {
  realizationRequest: WorkspaceRealizationRequest;
  record: WorkspaceRealizationRecord;
}

export interface ResolvedTarget {
  executionTarget: ExecutionTarget;
  remoteExecution: RemoteExecutionSpec;
}

/** The version-1 realization request: the run's source plus the runtime overlay (request over workspace config). */
export function buildRealizationRequest(input: RealizationInput): WorkspaceRealizationRequest {
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
 * Makes the workspace exist where the run executes and runs the provision command there (bounded by the
 * request's timeout, else the environment's, else `defaultTimeoutMs`). A driver that returns no record
 * fails: a run must never become ready with nothing persisted.
 */
export async function realizeWorkspace(
  driver: EnvironmentDriver,
  step: StepContext,
  input: RealizationInput,
  defaultTimeoutMs = DEFAULT_PROVISION_TIMEOUT_MS,
): Promise<Realization> {
  if (!driver.realize) throw new NonRetryableError(`driver ${driver.driver} does not realize workspaces`);
  const realizationRequest = buildRealizationRequest(input);
  const provisionTimeoutMs =
    input.request.provisionTimeoutMs ??
    (input.environment.config.provisionTimeoutMs as number | undefined) ??
    defaultTimeoutMs;
  const record = await driver.realize(step, { ...input, realizationRequest, provisionTimeoutMs });
  if (!record) throw new Error(`driver ${driver.driver} returned no workspace realization record`);
  const checked = WorkspaceRealizationRecordSchema.safeParse({ ...record, driver: input.environment.driver });
  if (!checked.success) {
    throw new NonRetryableError(
      `driver ${driver.driver} returned an invalid realization record: ${describeZodError(checked.error, 'record')}`,
    );
  }
  return { realizationRequest, record: checked.data };
}

/** How the agent reaches the realized workspace; the remote execution spec given to adapters is the SSH spec only. */
export async function resolveTarget(
  driver: EnvironmentDriver,
  step: StepContext,
  input: LeaseRef & { record: WorkspaceRealizationRecord | null },
): Promise<ResolvedTarget> {
  const checked = ExecutionTargetSchema.safeParse(await driver.resolveTarget(step, input));
  if (!checked.success) {
    throw new NonRetryableError(`invalid execution target: ${describeZodError(checked.error, 'target')}`);
  }
  const target = checked.data;
  const remoteExecution = target && target.kind === 'remote' && target.transport === 'ssh' ? target.spec : null;
  return { executionTarget: target, remoteExecution };
}
