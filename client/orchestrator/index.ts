// The control plane's orchestrator interface, backed by the durable run, in the call shapes of Paperclip's
// environment run orchestrator (2026.916.1; docs/paperclip.md): resolve the environment, acquire a lease for
// a heartbeat run, realize its workspace when the control plane knows it, release at the end. A control plane
// whose heartbeat calls an in-process orchestrator swaps in this one and keeps its call sites.
// compat/paperclip/ compiles it against Paperclip's published declarations (npm run test:paperclip-types).
import type { z } from 'zod';
import { Uuid, type RunResult, type RunState, type SshExecutionSpec } from '../../contracts/index.js';
import { resolveSecretRef } from '../../lib/secret-ref.js';
import { loadClientConfig, type ClientConfig } from '../config.js';
import { InvalidInputError, NotFoundError, RunFailedError, RunStateError, parseInput } from '../errors.js';
import { EnvRunClient } from '../runs.js';
import type { Store } from '../../store/store.js';
import { openEnvironments, releasedRecords, type EnvironmentReader } from './environments.js';
import { EnvironmentRunError, stepError } from './errors.js';
import {
  AcquireForRunSchema,
  AcquireLeaseSchema,
  RealizeForRunSchema,
  ReleaseForRunSchema,
  ResolveEnvironmentSchema,
  ResolveTransportSchema,
  runtimeOverlay,
  type AcquireForRunInput,
  type AcquireLeaseInput,
  type PersistedExecutionWorkspaceInput,
  type RealizeForRunInput,
  type ReleaseForRunInput,
  type ResolveEnvironmentInput,
  type ResolveTransportInput,
} from './inputs.js';
import { sandboxRunner } from './runner.js';
import {
  realizedWorkspace,
  toControlPlaneEnvironment,
  toControlPlaneLease,
  type AcquireForRunResult,
  type ControlPlaneEnvironment,
  type LeaseRecord,
  type OrchestratorExecutionTarget,
  type RealizeForRunResult,
  type ReleaseForRunResult,
  type SshRemoteExecution,
} from './shapes.js';
import { controlPlaneTarget, sshTransport } from './transport.js';

export { EnvironmentRunError, type EnvironmentErrorCode } from './errors.js';
export type { EnvironmentReader } from './environments.js';
export type {
  AcquireForRunInput,
  AcquireLeaseInput,
  ExecutionWorkspaceMode,
  PersistedExecutionWorkspaceInput,
  RealizeForRunInput,
  ReleaseForRunInput,
  ResolveEnvironmentInput,
  ResolveTransportInput,
} from './inputs.js';
export type { SandboxCommandRunner } from './runner.js';
export {
  toControlPlaneEnvironment,
  toControlPlaneLease,
  type AcquireForRunResult,
  type AdapterWorkspaceRealization,
  type ControlPlaneEnvironment,
  type ControlPlaneLease,
  type LeaseContext,
  type LeaseRecord,
  type OrchestratorExecutionTarget,
  type RealizeForRunResult,
  type ReleaseForRunResult,
  type SshRemoteExecution,
} from './shapes.js';

export interface OrchestratorOptions {
  /** A connected runs client (its close() stays the caller's); else one is connected from the config. */
  client?: EnvRunClient;
  config?: ClientConfig;
  /**
   * Where resolveEnvironment and releaseForRun read environments. Else envrun's database as the admin opens
   * it (DATABASE_URL, or the embedded store of ENVRUN_DATA_DIR), on first use; close() closes it.
   */
  environments?: EnvironmentReader;
  /**
   * How long a failed realization waits for an operator's retry before realizeForRun throws (ms). Default 0:
   * it throws as soon as the step's retry policy is spent.
   */
  awaitRetryMs?: number;
  /** Lease TTL of the runs it starts (ms); the run's default otherwise. */
  leaseTtlMs?: number;
  /**
   * Where the persisted workspace's provision command runs. `environment` (the default): in the run's
   * environment, whatever its driver (the local folder, the ssh host, inside the sandbox), with `/bin/sh -c`
   * and only an explicit environment. `paperclip`: as Paperclip's orchestrator: on ssh environments only,
   * with `bash -lc` (a login shell, `SHELL=/bin/bash`); local and sandbox environments skip it, their
   * control plane having provisioned its own worktree.
   */
  provision?: 'environment' | 'paperclip';
  /**
   * Hand ssh targets their private key (`privateKey`), read here, in the caller's process, from the
   * environment's `privateKeySecretRef` (`env:NAME`, `file:/path`), as Paperclip's adapters expect. Off by
   * default: `privateKey` is null and only the reference travels.
   */
  resolveSshPrivateKey?: boolean;
}

export interface EnvironmentRunOrchestrator {
  /** The selected environment, active; the company's local one (made on demand) for none or the local id. */
  resolveEnvironment(input: ResolveEnvironmentInput): Promise<ControlPlaneEnvironment>;
  /** Starts the run on the environment and waits until it holds its lease. */
  acquireLease(input: AcquireLeaseInput): Promise<LeaseRecord>;
  /** The ssh connection of an ssh environment's lease (null for other drivers). */
  resolveTransport(input: ResolveTransportInput): Promise<SshRemoteExecution | null>;
  /** Resolves the environment, starts the run, waits until it holds its lease; with its transport. */
  acquireForRun(input: AcquireForRunInput): Promise<AcquireForRunResult>;
  /** Realizes the run's workspace in its environment and returns the execution target. */
  realizeForRun<W extends PersistedExecutionWorkspaceInput = PersistedExecutionWorkspaceInput>(
    input: RealizeForRunInput<W>,
  ): Promise<RealizeForRunResult<W>>;
  /** Completes (or, still on its way to ready, cancels) the run; its lease is released. Never throws for it. */
  releaseForRun(input: ReleaseForRunInput): Promise<ReleaseForRunResult>;
  close(): Promise<void>;
}

const ENDED = new Set(['released', 'failed', 'cancelled']);

export async function createEnvironmentRunOrchestrator(
  options: OrchestratorOptions = {},
): Promise<EnvironmentRunOrchestrator> {
  const owned = options.client ? null : await EnvRunClient.connect(options.config);
  const runs = options.client ?? owned!;
  const runDefaults = {
    awaitRetryMs: options.awaitRetryMs ?? 0,
    ...(options.leaseTtlMs === undefined ? {} : { leaseTtlMs: options.leaseTtlMs }),
  };
  let store: ReturnType<typeof openEnvironments> | null = null;
  const opened = async () => (store ??= openEnvironments(options.config ?? loadClientConfig()));
  const environments = async (): Promise<EnvironmentReader> => options.environments ?? (await opened()).reader;
  // Sandbox commands are followed through their journal in envrun's store: the given reader when it is
  // envrun's store (`admin.store`), else the one opened from the config.
  const journal = async (): Promise<Store> =>
    options.environments && 'readOutput' in options.environments
      ? (options.environments as Store)
      : (await opened()).reader;

  async function privateKeyOf(spec: SshExecutionSpec): Promise<string | null> {
    return options.resolveSshPrivateKey ? resolveSecretRef(spec.privateKeySecretRef) : null;
  }

  /** Starts the run on `environmentId` (null: the company's local environment) and waits for its lease. */
  async function acquire(
    request: z.output<typeof AcquireLeaseSchema> | z.output<typeof AcquireForRunSchema>,
    environmentId: string | null,
  ): Promise<LeaseRecord> {
    let leased;
    try {
      leased = await runs.startRunAndWaitLeased({
        ...runDefaults,
        companyId: request.companyId,
        heartbeatRunId: request.heartbeatRunId,
        environmentId,
        executionWorkspaceId: request.executionWorkspaceId,
        // The control plane's workspace row is its own: providers see its id, envrun keeps no row for it.
        ...(request.persistedExecutionWorkspace?.id && !request.executionWorkspaceId
          ? { externalExecutionWorkspaceId: request.persistedExecutionWorkspace.id }
          : {}),
        issueId: request.issueId,
        agentId: request.agentId,
        leasePolicy: request.leasePolicy,
        ...(request.adapterType ? { adapterType: request.adapterType } : {}),
      });
    } catch (err) {
      throw stepError(err, 'lease_acquire_failed');
    }
    const { environment, lease } = leased;
    const persisted = request.persistedExecutionWorkspace ?? null;
    return {
      environment: toControlPlaneEnvironment(environment),
      lease: toControlPlaneLease(lease),
      leaseContext: {
        workflowId: runs.handle(request.companyId, request.heartbeatRunId).workflowId,
        companyId: request.companyId,
        heartbeatRunId: request.heartbeatRunId,
        environmentId: environment.id,
        leaseId: lease.id,
        executionWorkspaceId: lease.executionWorkspaceId ?? persisted?.id ?? null,
        executionWorkspaceMode: persisted?.mode ?? null,
        issueId: lease.issueId,
      },
    };
  }

  async function resolveTransport(input: ResolveTransportInput): Promise<SshRemoteExecution | null> {
    return sshTransport(parseInput(ResolveTransportSchema, input, 'input'), privateKeyOf);
  }

  return {
    async resolveEnvironment(input) {
      const { companyId, selectedEnvironmentId, localEnvironmentId } = parseInput(
        ResolveEnvironmentSchema,
        input,
        'input',
      );
      const selected = selectedEnvironmentId || localEnvironmentId;
      const reader = await environments();
      const environment =
        selected === localEnvironmentId
          ? await reader.ensureLocalEnvironment(companyId)
          : Uuid.safeParse(selected).success
            ? await reader.getEnvironment(companyId, selected)
            : null;
      if (!environment) {
        throw new EnvironmentRunError('environment_not_found', `environment ${selected} not found`, {
          environmentId: selected,
        });
      }
      if (environment.status !== 'active') {
        throw new EnvironmentRunError(
          'environment_inactive',
          `environment ${environment.name} (${environment.id}) is ${environment.status}`,
          { environmentId: environment.id, driver: environment.driver },
        );
      }
      return toControlPlaneEnvironment(environment);
    },

    async acquireLease(input) {
      const request = parseInput(AcquireLeaseSchema, input, 'input');
      return acquire(request, request.environment.id);
    },

    resolveTransport,

    async acquireForRun(input) {
      const request = parseInput(AcquireForRunSchema, input, 'input');
      let environmentId: string | null = request.environmentId ?? null;
      const selected = request.selectedEnvironmentId || null; // '' selects nothing, as in Paperclip
      if (selected && selected !== request.localEnvironmentId) {
        if (!Uuid.safeParse(selected).success) {
          throw new EnvironmentRunError(
            'environment_not_found',
            `selectedEnvironmentId: environment ${selected} not found (envrun's environment ids are UUIDs)`,
            { environmentId: selected },
          );
        }
        environmentId = selected;
      }
      const held = await acquire(request, environmentId);
      const executionTransport = await resolveTransport({
        companyId: request.companyId,
        adapterType: request.adapterType ?? 'process',
        environment: held.environment,
        leaseMetadata: held.lease.metadata,
      });
      return { ...held, executionTransport };
    },

    async realizeForRun<W extends PersistedExecutionWorkspaceInput>(
      input: RealizeForRunInput<W>,
    ): Promise<RealizeForRunResult<W>> {
      const request = parseInput(RealizeForRunSchema, input, 'input');
      const { companyId, heartbeatRunId } = request;
      const state = await runs.getRun(companyId, heartbeatRunId);
      if (!state) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      if (request.lease.id !== state.leaseId) {
        throw new InvalidInputError(`lease.id: ${request.lease.id} is not the lease of run ${heartbeatRunId}`);
      }
      if (request.environment.id !== state.environmentId) {
        throw new InvalidInputError(`environment.id: not the environment of run ${heartbeatRunId}`);
      }
      const persisted = request.persistedExecutionWorkspace ?? null;
      const overlay = runtimeOverlay(persisted, options.provision, state.driver);
      let result: RunResult;
      try {
        result = await runs.realizeRun(companyId, heartbeatRunId, {
          workspace: request.executionWorkspace,
          adapterType: request.adapterType,
          requestedMode: persisted?.mode ?? request.effectiveExecutionWorkspaceMode ?? null,
          runtimeOverlay: overlay,
        });
      } catch (err) {
        throw stepError(err, 'workspace_realization_failed', state);
      }
      let executionTarget: OrchestratorExecutionTarget | null;
      try {
        executionTarget = await controlPlaneTarget(
          result.executionTarget,
          (timeoutMs) => sandboxRunner(runs, companyId, heartbeatRunId, timeoutMs, journal),
          privateKeyOf,
        );
      } catch (err) {
        throw stepError(err, 'transport_resolution_failed', state);
      }
      return {
        lease: toControlPlaneLease(result.lease),
        executionTarget,
        remoteExecution:
          executionTarget?.kind === 'remote' && executionTarget.transport === 'ssh' ? executionTarget.spec : null,
        workspaceRealization: result.workspaceRealization,
        persistedExecutionWorkspace: realizedWorkspace(input.persistedExecutionWorkspace ?? null, result),
      };
    },

    async releaseForRun(input) {
      const request = parseInput(ReleaseForRunSchema, input, 'input');
      const { companyId, heartbeatRunId, status, cancelActiveWork, providerResourceDisposition } = request;
      const release = {
        ...(cancelActiveWork === undefined ? {} : { cancelActiveWork }),
        ...(providerResourceDisposition === undefined ? {} : { providerResourceDisposition }),
      };
      const succeeded = status === undefined || status === 'released' || status === 'succeeded';
      const completion = succeeded
        ? { status: 'succeeded' as const, ...release }
        : { status: 'failed' as const, failureReason: request.failureReason ?? `run ${status}`, ...release };
      const errors: ReleaseForRunResult['errors'] = [];
      let state: RunState | null = null;
      try {
        state = await runs.getRun(companyId, heartbeatRunId);
        if (!state) return { released: [], errors: [] };
        try {
          if (!state.completion && (state.phase === 'ready' || state.phase === 'awaiting_realize')) {
            await runs.completeRun(companyId, heartbeatRunId, completion);
          } else if (!ENDED.has(state.phase) && !state.completion) {
            // Still on its way to ready: stop it; its undo releases the lease.
            await runs.cancelRun(companyId, heartbeatRunId, release);
          }
        } catch (err) {
          // Ended between the read and the request: its release already happened; report it as it is.
          if (!(err instanceof RunStateError)) throw err;
        }
        state = (await runs.waitEnded(companyId, heartbeatRunId)) ?? state;
      } catch (err) {
        const error = stepError(err, 'lease_release_failed', state) as EnvironmentRunError;
        errors.push({ leaseId: state?.leaseId ?? '*', error });
        if (!state) return { released: [], errors };
      }
      const after = state;
      const released = await releasedRecords(after, errors, environments);
      for (const lease of after.releasedLeases) {
        if (lease.cleanupStatus !== 'failed') continue;
        const error = new EnvironmentRunError(
          'lease_cleanup_failed',
          String(lease.metadata?.cleanupError ?? 'provider cleanup failed'),
          {
            environmentId: lease.environmentId,
            driver: after.driver ?? undefined,
            provider: lease.provider ?? undefined,
          },
        );
        errors.push({ leaseId: lease.id, error });
      }
      if (after.error?.code === 'lease_release_failed' && after.leaseId) {
        const error = EnvironmentRunError.fromRun(new RunFailedError(after.error), 'lease_release_failed');
        errors.push({ leaseId: after.leaseId, error });
      }
      return { released, errors };
    },

    async close() {
      await owned?.close();
      if (store) await (await store).close();
    },
  };
}
