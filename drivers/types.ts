import type {
  Driver,
  Environment,
  EnvironmentLease,
  ExecResult,
  DriverRealization,
  ExecutionTarget,
  RealizableRequest,
  RunRequest,
  WorkspaceRealizationRecord,
  WorkspaceRealizationRequest,
} from '../contracts/index.js';
import type { ProbeResult, ProviderExecRequest } from './providers/contract.js';

export interface StepContext {
  /** The activity attempt, 1-based. */
  attempt: number;
  /** Derived from the workflow, not the attempt: the same for every retry of one run's step. */
  idempotencyKey: string;
  signal?: AbortSignal | undefined;
  progress?: ((line: string) => void) | undefined;
}

export interface AcquiredLease {
  provider: string | null;
  providerLeaseId: string | null;
  metadata: Record<string, unknown>;
  expiresAt: Date | null;
}

export interface RealizeInput {
  environment: Environment;
  lease: EnvironmentLease;
  request: RealizableRequest;
  realizationRequest: WorkspaceRealizationRequest;
  provisionTimeoutMs: number;
}

export interface LeaseRef {
  environment: Environment;
  lease: EnvironmentLease;
}

/** What a driver's release says about the lease: merged into its metadata and its release's log row. */
export interface ReleaseReport {
  metadata?: Record<string, unknown>;
}

/** One implementation per environment driver (local, ssh, sandbox, plugin). */
export interface EnvironmentDriver {
  readonly driver: Driver;
  /** The provider named on leases and failures, from the environment's (already validated) config. */
  /**
   * True when the environment's resources live on the worker host that acquires them (a local folder, a
   * sandbox on this machine): realize, target, exec and release of its leases then run on that host.
   */
  hostBound?(environment: Environment): boolean;
  providerOf(environment: Environment): string | null;
  /**
   * Checks the environment's config (throws an Error naming the field) and returns it normalized: what is
   * stored on the environment at create and update. A sandbox provider's check may be asynchronous.
   */
  validateConfig(config: Record<string, unknown>): Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Checks that the environment is reachable and usable; diagnostics (with their severity) for operators. */
  probe?(environment: Environment): Promise<ProbeResult>;
  /** Why this worker cannot run the environment (e.g. its provider is not loaded here), or null. */
  unsupportedReason?(environment: Environment): string | null;
  acquire(
    ctx: StepContext,
    input: { environment: Environment; lease: EnvironmentLease; request: RunRequest },
  ): Promise<AcquiredLease>;
  /**
   * Whether runs on this environment realize a workspace (absent: they do when `realize` exists). A plugin
   * environment whose plugin realizes nothing keeps its realization `{}`.
   */
  realizes?(environment: Environment): boolean;
  /** Absent for drivers that realize nothing (plugin): the realization stays `{}`. */
  realize?(ctx: StepContext, input: RealizeInput): Promise<DriverRealization | null>;
  resolveTarget(ctx: StepContext, input: LeaseRef & { record: DriverRealization | null }): Promise<ExecutionTarget>;
  execute(
    ctx: StepContext,
    input: LeaseRef & { record: DriverRealization | null },
    request: ProviderExecRequest,
  ): Promise<ExecResult>;
  /**
   * Frees the lease's resource. `keep` when the resource outlives the lease (reuse, retained);
   * `cancelActiveWork`: stop commands still running instead of waiting for them. What it reports is merged
   * into the lease's metadata (a sandbox's termination receipt: `termination`).
   */
  release(
    ctx: StepContext,
    input: LeaseRef & {
      keep: boolean;
      cancelActiveWork?: boolean;
      /** A kept resource is stopped (its work ended, as `stop_and_retain` asks), not left running. */
      stopKept?: boolean;
    },
  ): Promise<ReleaseReport | void>;
  /**
   * Destroys a resource a release kept (reuse, retention, a disposition that kept it) once nothing will use
   * it again: its environment archived, its retention ended, or found orphaned. What it reports (a sandbox's
   * termination receipt: `termination`) is merged into the metadata of the leases that held it. Absent: the
   * driver keeps nothing that outlives its lease.
   */
  destroy?(ctx: StepContext, input: LeaseRef & { cancelActiveWork: boolean }): Promise<ReleaseReport | void>;
  /** Whether the lease's resource is still there (a warm pool probes its idle sandboxes). Absent: assumed. */
  alive?(ctx: StepContext, input: LeaseRef): Promise<boolean>;
}
