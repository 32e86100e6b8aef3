// The sandbox provider contract. A provider is a module: envrun's core never names a provider.
//
// Version 2 (this file's `SandboxProvider`) hands the lease (`{providerLeaseId, metadata, expiresAt}`, as the
// provider returned it at acquire and as it is stored on the lease row) to every call after acquire, carries
// the run's identity on every call, lets `validateConfig` be async and normalize, gives probe diagnostics a
// severity, and has release and destroy return a termination receipt. A module declares
// `contractVersion: 2`; a module without it is a version 1 provider (`SandboxProviderV1`), adapted by
// `load.ts` so it keeps working unchanged.
import type { ExecResult } from '../../contracts/index.js';

/** Who the call is for: the run's identity, as a control plane's own provider calls carry it. */
export interface ProviderCallContext {
  companyId: string;
  environmentId: string;
  heartbeatRunId: string;
  /** envrun's lease id (for audit rows; the provider's own id is `lease.providerLeaseId`). */
  leaseId: string;
  agentId: string | null;
  adapterType: string | null;
  executionWorkspaceId: string | null;
  issueId: string | null;
  /** The latest time the lease may stay active (ISO 8601): its expiry when the run has a lease TTL. */
  requestedExpiresAt: string | null;
  /** The activity attempt (1-based): lets deterministic test providers fail the first N attempts. */
  attempt: number;
  signal?: AbortSignal | undefined;
  onProgress?: ((line: string) => void) | undefined;
}

/** The provider's own record of a lease: returned by acquire and resume, handed back on every later call. */
export interface ProviderLease {
  providerLeaseId: string;
  metadata: Record<string, unknown>;
  expiresAt: string | null;
}

export interface ProviderExecRequest {
  command: string;
  args: string[];
  /** Inside the sandbox; the workspace cwd when absent. */
  cwd?: string | undefined;
  /** The only environment the command sees. */
  env: Record<string, string>;
  stdin?: string | undefined;
  timeoutMs: number;
  /** A command run before the agent's work (the provision command): outside any persistent session. */
  bypassSession?: boolean | undefined;
  /** Which phase's egress policy holds for the command: 'provision' for the provision command, else 'run'. */
  phase?: 'provision' | 'run' | undefined;
  /**
   * Streaming, when the caller journals the command's output: each chunk as the command writes it, raw bytes
   * in order per stream. A provider that calls it need not keep the output: the result's `stdout`/`stderr`
   * are then ignored. One that never calls it returns the output in its result, as before. Backpressure:
   * when it returns a promise, the provider reads no more of that command's output until it settles.
   */
  onOutput?: ((stream: 'stdout' | 'stderr', chunk: Buffer) => void | Promise<void>) | undefined;
  /**
   * Stdin as a byte stream the caller keeps open (written while the command runs); the command's stdin ends
   * when it ends. Given instead of `stdin`. A provider that cannot stream stdin refuses the request.
   */
  stdinStream?: AsyncIterable<Buffer> | undefined;
  /**
   * Called once the command runs, with a way to signal its whole process group (`run kill --signal`).
   * A provider that never calls it is ended through `signal` (the call's AbortSignal) instead.
   */
  onStarted?: ((control: CommandControl) => void) | undefined;
}

/** What a running command lets its caller do to it. */
export interface CommandControl {
  /** Sends `signal` to the command's whole process group (or the sandbox's equivalent). */
  kill(signal: NodeJS.Signals): void;
}

/** Returned only once the provider confirms the resource's execution has ended. */
export interface TerminationReceipt {
  providerLeaseId: string;
  state: 'stopped' | 'destroyed';
}

/** What a release or destroy says about the lease: stored on the lease's metadata and its log row. */
export interface ProviderReleaseReport {
  /** What the sync-back brought back and what it did not, or why it failed (kept small: it is stored). */
  syncBack?: Record<string, unknown>;
  receipt?: TerminationReceipt;
}

export interface ProbeDiagnostic {
  severity: 'info' | 'warning' | 'error';
  message: string;
  code?: string;
}

export interface ProbeResult {
  ok: boolean;
  summary?: string;
  diagnostics: ProbeDiagnostic[];
}

/** The config as the provider normalized it (stored on the environment), and warnings for the operator. */
export interface ValidatedConfig<Config> {
  config: Config;
  warnings: string[];
}

export type LeaseCallContext = ProviderCallContext & { lease: ProviderLease };

export interface SandboxProvider<Config = Record<string, unknown>> {
  readonly contractVersion: 2;
  readonly key: string;
  /** Set when the resource lives on the worker host that made it: its later steps run on that host. */
  readonly hostBound?: boolean;
  /**
   * Set only by a provider that enforces `network: "allowlist"` and the `egress` policy (each phase's allowed
   * `host:port`s, injected credentials); envrun refuses those environments for any other provider.
   */
  readonly egressAllowlist?: boolean;
  /**
   * Parses the environment's config (throws naming the field). Its `config` is stored on the environment at
   * create/update and is what every call gets.
   */
  validateConfig(config: Record<string, unknown>): Promise<ValidatedConfig<Config>>;
  probe(config: Config, ctx: { companyId: string; environmentId: string }): Promise<ProbeResult>;
  /**
   * Creates (or, for the same idempotency key, adopts) the lease's resource. `reuseKey` is set when the
   * resource should be shared by later runs (reuse policies): the same key yields the same resource.
   */
  acquireLease(
    config: Config,
    ctx: ProviderCallContext & { idempotencyKey: string; reuseKey: string | null },
  ): Promise<ProviderLease>;
  /**
   * Finds the lease's resource again from its stored record: called before any other call by a process
   * that did not acquire it (another worker, a restarted one). Null when the resource is gone.
   */
  resumeLease(config: Config, ctx: LeaseCallContext): Promise<ProviderLease | null>;
  /**
   * Ends this run's use of the resource: its processes first, then the sync-back, then the resource,
   * unless `keep` (a reused or retained resource outlives the lease). `cancelActiveWork`: stop running
   * commands instead of waiting for them. Fails only when the resource could not be freed, not for what
   * the workspace holds (that is reported).
   */
  releaseLease(
    config: Config,
    ctx: LeaseCallContext & {
      keep: boolean;
      cancelActiveWork: boolean;
      /** Local workspace to sync changes back into, if realized. */ syncBackTo: string | null;
      /** Where realize put the workspace (its `cwd`, as stored on the lease), if realized. */
      realizedCwd?: string | null;
      /** With `keep`: stop the resource (end its work) and keep it for a later run, rather than leave it running. */
      stopKept?: boolean;
    },
  ): Promise<ProviderReleaseReport>;
  /** Destroys a resource that was kept (reuse, retention) once nothing will use it again. */
  destroyLease(config: Config, ctx: LeaseCallContext & { cancelActiveWork: boolean }): Promise<ProviderReleaseReport>;
  realizeWorkspace(
    config: Config,
    ctx: LeaseCallContext & { localPath: string },
  ): Promise<{ cwd: string; metadata: Record<string, unknown> }>;
  execute(config: Config, ctx: LeaseCallContext, request: ProviderExecRequest): Promise<ExecResult>;
  /** Where the sandbox is reached now (it may have moved or died since realization). */
  resolveTarget?(config: Config, ctx: LeaseCallContext & { cwd: string }): Promise<{ remoteCwd: string }>;
}

// ---- version 1, kept for provider modules written against it ----

/** The version 1 call context: no run identity beyond the environment and run. */
export interface ProviderCallContextV1 {
  environmentId: string;
  heartbeatRunId: string;
  attempt: number;
  signal?: AbortSignal | undefined;
  onProgress?: ((line: string) => void) | undefined;
}

/** Version 1: calls after acquire get only the `providerLeaseId`; probe diagnostics are strings. */
export interface SandboxProviderV1<Config = Record<string, unknown>> {
  readonly contractVersion?: 1;
  readonly key: string;
  readonly hostBound?: boolean;
  validateConfig(config: Record<string, unknown>): Config;
  probe(config: Config): Promise<{ ok: boolean; diagnostics: string[] }>;
  acquireLease(
    config: Config,
    ctx: ProviderCallContextV1 & { idempotencyKey: string; reuseKey: string | null },
  ): Promise<ProviderLease>;
  resumeLease(config: Config, ctx: ProviderCallContextV1 & { providerLeaseId: string }): Promise<ProviderLease | null>;
  releaseLease(
    config: Config,
    ctx: ProviderCallContextV1 & { providerLeaseId: string; keep: boolean; syncBackTo?: string | null },
  ): Promise<{ syncBack?: Record<string, unknown> } | void>;
  destroyLease(config: Config, ctx: ProviderCallContextV1 & { providerLeaseId: string }): Promise<void>;
  realizeWorkspace(
    config: Config,
    ctx: ProviderCallContextV1 & { providerLeaseId: string; localPath: string },
  ): Promise<{ cwd: string; metadata: Record<string, unknown> }>;
  execute(
    config: Config,
    ctx: ProviderCallContextV1 & { providerLeaseId: string },
    request: ProviderExecRequest,
  ): Promise<ExecResult>;
  resolveTarget?(
    config: Config,
    ctx: ProviderCallContextV1 & { providerLeaseId: string; cwd: string },
  ): Promise<{ remoteCwd: string }>;
}
