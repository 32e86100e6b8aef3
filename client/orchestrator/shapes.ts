// The orchestrator's results: envrun's records in the shapes the control plane's types have (Paperclip's
// EnvironmentRuntimeLeaseRecord, its lease and environment rows, its execution targets), and the conversions.
import type {
  Environment,
  EnvironmentLease,
  ExecutionTarget,
  LeaseStatus,
  RunResult,
  SshExecutionSpec,
} from '../../contracts/index.js';
import type { EnvironmentRunError } from './errors.js';
import type { ExecutionWorkspaceMode, PersistedExecutionWorkspaceInput } from './inputs.js';
import type { SandboxCommandRunner } from './runner.js';

/** An environment as the control plane's types have it: timestamps as dates, no agent variables (`envVars`). */
export type ControlPlaneEnvironment = Omit<Environment, 'createdAt' | 'updatedAt'> & {
  envVars: Record<string, string>;
  createdAt: Date;
  updatedAt: Date;
};

/** A lease as the control plane's types have it: timestamps as dates; envrun's `lost` is `pending_cleanup`. */
export type ControlPlaneLease = Omit<
  EnvironmentLease,
  'status' | 'acquiredAt' | 'lastUsedAt' | 'expiresAt' | 'releasedAt' | 'createdAt' | 'updatedAt'
> & {
  status: Exclude<LeaseStatus, 'lost'> | 'pending_cleanup';
  acquiredAt: Date;
  lastUsedAt: Date;
  expiresAt: Date | null;
  releasedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
};

/** How the lease is tied to the run: what `realizeForRun` and `releaseForRun` find the run by. */
export interface LeaseContext {
  workflowId: string;
  companyId: string;
  heartbeatRunId: string;
  environmentId: string;
  leaseId: string;
  /** envrun's execution workspace of the lease, else the control plane's persisted one. */
  executionWorkspaceId: string | null;
  executionWorkspaceMode: ExecutionWorkspaceMode | null;
  issueId: string | null;
}

/** What a lease is held with (Paperclip's EnvironmentRuntimeLeaseRecord). */
export interface LeaseRecord {
  environment: ControlPlaneEnvironment;
  lease: ControlPlaneLease;
  leaseContext: LeaseContext;
}

/**
 * The ssh connection an adapter uses. `privateKey` is null unless the orchestrator resolves the key
 * (`resolveSshPrivateKey`); `privateKeySecretRef` names it either way.
 */
export type SshRemoteExecution = SshExecutionSpec & { privateKey: string | null };

/** How the adapter reaches the realized workspace, as a control plane's adapters read it. */
export type AdapterWorkspaceRealization = {
  mode: 'copy' | 'in_place';
  authoritativeRoot: string;
  pathAliases: Array<{ path: string; target: string }>;
  outboundRestorePaths: string[];
};

type Target = NonNullable<ExecutionTarget>;
export type OrchestratorExecutionTarget =
  | (Extract<Target, { kind: 'local' }> & { workspaceRealization: AdapterWorkspaceRealization })
  | (Extract<Target, { transport: 'sandbox' }> & {
      runner: SandboxCommandRunner;
      workspaceRealization: AdapterWorkspaceRealization;
    })
  | (Omit<Extract<Target, { transport: 'ssh' }>, 'spec'> & {
      spec: SshRemoteExecution;
      workspaceRealization: AdapterWorkspaceRealization;
    });

export interface AcquireForRunResult extends LeaseRecord {
  /** The ssh connection for an ssh environment (as far as known before realize), else null. */
  executionTransport: SshRemoteExecution | null;
}

export interface RealizeForRunResult<W extends PersistedExecutionWorkspaceInput = PersistedExecutionWorkspaceInput> {
  lease: ControlPlaneLease;
  executionTarget: OrchestratorExecutionTarget | null;
  remoteExecution: SshRemoteExecution | null;
  workspaceRealization: RunResult['workspaceRealization'];
  /** The given persisted workspace, its `metadata` carrying the realization (envrun's row: as stored). */
  persistedExecutionWorkspace: W | null;
}

export interface ReleaseForRunResult {
  /** The run's released leases as stored, with their environment. */
  released: LeaseRecord[];
  /** One entry per lease whose release or cleanup failed (`*`: the release itself could not be asked for). */
  errors: Array<{ leaseId: string; error: EnvironmentRunError }>;
}

function asDate(value: string): Date;
function asDate(value: string | null): Date | null;
function asDate(value: string | null): Date | null {
  return value === null ? null : new Date(value);
}

export function toControlPlaneEnvironment(environment: Environment): ControlPlaneEnvironment {
  return {
    ...environment,
    envVars: {},
    createdAt: asDate(environment.createdAt),
    updatedAt: asDate(environment.updatedAt),
  };
}

export function toControlPlaneLease(lease: EnvironmentLease): ControlPlaneLease {
  return {
    ...lease,
    status: lease.status === 'lost' ? 'pending_cleanup' : lease.status,
    acquiredAt: asDate(lease.acquiredAt),
    lastUsedAt: asDate(lease.lastUsedAt),
    expiresAt: asDate(lease.expiresAt),
    releasedAt: asDate(lease.releasedAt),
    createdAt: asDate(lease.createdAt),
    updatedAt: asDate(lease.updatedAt),
  };
}

/** The given persisted workspace, its `metadata` carrying the realization (envrun's own row: as stored). */
export function realizedWorkspace<W extends PersistedExecutionWorkspaceInput>(
  given: W | null,
  result: RunResult,
): W | null {
  if (given && result.persistedExecutionWorkspace?.id === given.id) {
    // envrun's own row: its metadata as stored, with the realization request and record.
    return { ...given, metadata: result.persistedExecutionWorkspace.metadata };
  }
  if (given && Object.keys(result.workspaceRealization).length > 0) {
    return { ...given, metadata: { ...given.metadata, workspaceRealization: result.workspaceRealization } };
  }
  return given;
}
