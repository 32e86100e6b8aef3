// The control plane's orchestrator interface, backed by the durable run: acquire a lease for a heartbeat
// run, realize its workspace when the control plane knows it, release at the end. A control plane whose
// heartbeat calls an in-process orchestrator swaps in this one and keeps its call sites.
import { z } from 'zod';
import {
  EnvRunError,
  ExecutionWorkspaceRuntimeConfig,
  ExternalId,
  LeasePolicySchema,
  RealizedExecutionWorkspaceSchema,
  type Driver,
  type Environment,
  type EnvironmentLease,
  type ErrorCode,
  type ExecutionTarget,
  type ExecutionWorkspace,
  type RemoteExecutionSpec,
  type RunResult,
} from '../contracts/index.js';
import type { ClientConfig } from './config.js';
import { InvalidInputError, NotFoundError, RunFailedError, RunStateError, parseInput } from './errors.js';
import { EnvRunClient } from './runs.js';

/**
 * A failed step of the run, in the shape a control plane's in-process orchestrator throws, so its call
 * sites keep working: fields the run does not know are undefined; `cause` is the client's RunFailedError.
 */
export class EnvironmentRunError extends EnvRunError {
  override name = 'EnvironmentRunError';
  readonly code: ErrorCode | 'run_cancelled';
  readonly environmentId: string | undefined;
  readonly driver: Driver | undefined;
  readonly provider: string | undefined;

  constructor(error: RunFailedError) {
    super(error.message, { cause: error });
    this.code = error.code;
    this.environmentId = error.environmentId ?? undefined;
    this.driver = error.driver ?? undefined;
    this.provider = error.provider ?? undefined;
  }
}

const AcquireForRunSchema = z
  .object({
    companyId: ExternalId,
    heartbeatRunId: ExternalId,
    environmentId: z.uuid().nullish(),
    executionWorkspaceId: z.uuid().nullish(),
    issueId: ExternalId.nullish(),
    agentId: ExternalId.nullish(),
    leasePolicy: LeasePolicySchema.nullish(),
  })
  .strict();
export type AcquireForRunInput = z.input<typeof AcquireForRunSchema>;

const ReleaseForRunSchema = z
  .object({ companyId: ExternalId, heartbeatRunId: ExternalId, status: z.string().min(1).max(64) })
  .strict();
export type ReleaseForRunInput = z.input<typeof ReleaseForRunSchema>;

/** How the lease is tied to the run: what `realizeForRun` and `releaseForRun` find the run by. */
export interface LeaseContext {
  workflowId: string;
  companyId: string;
  heartbeatRunId: string;
  environmentId: string;
  leaseId: string;
  executionWorkspaceId: string | null;
  issueId: string | null;
}

export interface AcquireForRunResult {
  environment: Environment;
  lease: EnvironmentLease;
  leaseContext: LeaseContext;
}

export interface RealizeForRunInput {
  environment: Pick<Environment, 'id'>;
  lease: Pick<EnvironmentLease, 'id'>;
  adapterType: string;
  companyId: string;
  issueId?: string | null;
  heartbeatRunId: string;
  /** The realized execution workspace: where the code is on the control plane's side. */
  executionWorkspace: z.input<typeof RealizedExecutionWorkspaceSchema>;
  effectiveExecutionWorkspaceMode?: string | null;
  /** The persisted execution workspace; its `metadata.config` carries the provision command. */
  persistedExecutionWorkspace?: Pick<ExecutionWorkspace, 'id' | 'metadata'> | null;
}

export interface RealizeForRunResult {
  lease: EnvironmentLease;
  executionTarget: ExecutionTarget;
  remoteExecution: RemoteExecutionSpec;
  workspaceRealization: RunResult['workspaceRealization'];
  persistedExecutionWorkspace: ExecutionWorkspace | null;
}

export interface ReleaseForRunResult {
  /** The run's leases as stored after release. */
  released: EnvironmentLease[];
  /** One entry per lease whose release failed. */
  errors: Array<{ leaseId: string; code: ErrorCode; message: string }>;
}

export interface OrchestratorOptions {
  /** A connected runs client (its close() stays the caller's); else one is connected from the config. */
  client?: EnvRunClient;
  config?: ClientConfig;
  /**
   * How long a failed realization waits for an operator's retry before realizeForRun throws (ms). Default 0:
   * it throws as soon as the step's retry policy is spent.
   */
  awaitRetryMs?: number;
  /** Lease TTL of the runs it starts (ms); the run's default otherwise. */
  leaseTtlMs?: number;
}

export interface EnvironmentRunOrchestrator {
  acquireForRun(input: AcquireForRunInput): Promise<AcquireForRunResult>;
  realizeForRun(input: RealizeForRunInput): Promise<RealizeForRunResult>;
  releaseForRun(input: ReleaseForRunInput): Promise<ReleaseForRunResult>;
  close(): Promise<void>;
}

const ENDED = new Set(['released', 'failed', 'cancelled']);

function runError(err: unknown): unknown {
  return err instanceof RunFailedError ? new EnvironmentRunError(err) : err;
}

export async function createEnvironmentRunOrchestrator(
  options: OrchestratorOptions = {},
): Promise<EnvironmentRunOrchestrator> {
  const owned = options.client ? null : await EnvRunClient.connect(options.config);
  const runs = options.client ?? owned!;
  const runDefaults = {
    awaitRetryMs: options.awaitRetryMs ?? 0,
    ...(options.leaseTtlMs === undefined ? {} : { leaseTtlMs: options.leaseTtlMs }),
  };

  return {
    async acquireForRun(input) {
      const request = parseInput(AcquireForRunSchema, input, 'input');
      try {
        const { environment, lease } = await runs.startRunAndWaitLeased({ ...runDefaults, ...request });
        const leaseContext: LeaseContext = {
          workflowId: runs.handle(request.companyId, request.heartbeatRunId).workflowId,
          companyId: request.companyId,
          heartbeatRunId: request.heartbeatRunId,
          environmentId: environment.id,
          leaseId: lease.id,
          executionWorkspaceId: lease.executionWorkspaceId,
          issueId: lease.issueId,
        };
        return { environment, lease, leaseContext };
      } catch (err) {
        throw runError(err);
      }
    },

    async realizeForRun(input) {
      const companyId = parseInput(ExternalId, input.companyId, 'companyId');
      const heartbeatRunId = parseInput(ExternalId, input.heartbeatRunId, 'heartbeatRunId');
      const state = await runs.getRun(companyId, heartbeatRunId);
      if (!state) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      const held = state.leaseId;
      if (input.lease?.id !== held) {
        throw new InvalidInputError(`lease.id: ${String(input.lease?.id)} is not the lease of run ${heartbeatRunId}`);
      }
      if (input.environment?.id !== state.environmentId) {
        throw new InvalidInputError(`environment.id: not the environment of run ${heartbeatRunId}`);
      }
      const persisted = input.persistedExecutionWorkspace ?? null;
      const stored = ExecutionWorkspaceRuntimeConfig.safeParse(persisted?.metadata?.config ?? {});
      const config = stored.success ? stored.data : {};
      try {
        return await runs.realizeRun(companyId, heartbeatRunId, {
          workspace: input.executionWorkspace,
          adapterType: input.adapterType,
          requestedMode: input.effectiveExecutionWorkspaceMode ?? null,
          runtimeOverlay: {
            provisionCommand: config.provisionCommand ?? null,
            teardownCommand: config.teardownCommand ?? null,
            cleanupCommand: config.cleanupCommand ?? null,
          },
        });
      } catch (err) {
        throw runError(err);
      }
    },

    async releaseForRun(input) {
      const { companyId, heartbeatRunId, status } = parseInput(ReleaseForRunSchema, input, 'input');
      const completion =
        status === 'succeeded'
          ? { status: 'succeeded' as const }
          : { status: 'failed' as const, failureReason: `run ${status}` };
      const state = await runs.getRun(companyId, heartbeatRunId);
      if (!state) return { released: [], errors: [] };
      try {
        if (!state.completion && (state.phase === 'ready' || state.phase === 'awaiting_realize')) {
          await runs.completeRun(companyId, heartbeatRunId, completion);
        } else if (!ENDED.has(state.phase) && !state.completion) {
          // Still on its way to ready: stop it; its undo releases the lease.
          await runs.cancelRun(companyId, heartbeatRunId);
        }
      } catch (err) {
        // Ended between the read and the request: its release already happened; report it as it is.
        if (!(err instanceof RunStateError)) throw runError(err);
      }
      const after = (await runs.waitEnded(companyId, heartbeatRunId)) ?? state;
      const errors: ReleaseForRunResult['errors'] = after.releasedLeases
        .filter((lease) => lease.cleanupStatus === 'failed')
        .map((lease) => ({
          leaseId: lease.id,
          code: 'lease_cleanup_failed',
          message: String(lease.metadata?.cleanupError ?? 'provider cleanup failed'),
        }));
      if (after.error?.code === 'lease_release_failed' && after.leaseId) {
        errors.push({ leaseId: after.leaseId, code: after.error.code, message: after.error.message });
      }
      return { released: after.releasedLeases, errors };
    },

    async close() {
      await owned?.close();
    },
  };
}
