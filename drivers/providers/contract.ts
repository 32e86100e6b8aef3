// The sandbox provider contract. A provider is a module: envrun's core never names a provider.
import type { ExecResult } from '../../contracts/index.js';

export interface ProviderCallContext {
  environmentId: string;
  heartbeatRunId: string;
  /** The activity attempt (1-based): lets deterministic test providers fail the first N attempts. */
  attempt: number;
  signal?: AbortSignal | undefined;
  onProgress?: ((line: string) => void) | undefined;
}

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
}

/** What a release says about the lease: stored on the lease's metadata and in its release's log row. */
export interface ProviderReleaseReport {
  /** What the sync-back brought back and what it did not, or why it failed (kept small: it is stored). */
  syncBack?: Record<string, unknown>;
}

export interface ProbeResult {
  ok: boolean;
  diagnostics: string[];
}

export interface SandboxProvider<Config = Record<string, unknown>> {
  readonly key: string;
  /** Set when the resource lives on the worker host that made it: its later steps run on that host. */
  readonly hostBound?: boolean;
  /** Parses the environment's config (throws naming the field); the result is what every call gets. */
  validateConfig(config: Record<string, unknown>): Config;
  probe(config: Config): Promise<ProbeResult>;
  /**
   * Creates (or, for the same idempotency key, adopts) the lease's resource. `reuseKey` is set when the
   * resource should be shared by later runs (reuse policies): the same key yields the same resource.
   */
  acquireLease(
    config: Config,
    ctx: ProviderCallContext & { idempotencyKey: string; reuseKey: string | null },
  ): Promise<ProviderLease>;
  resumeLease(config: Config, ctx: ProviderCallContext & { providerLeaseId: string }): Promise<ProviderLease | null>;
  /**
   * Ends this run's use of the resource (a reused resource is kept): its processes first, then the
   * sync-back, then the resource. Fails only when the resource could not be freed, not for what the
   * workspace holds (that is reported).
   */
  releaseLease(
    config: Config,
    ctx: ProviderCallContext & {
      providerLeaseId: string;
      keep: boolean;
      /** Local workspace to sync changes back into, if realized. */ syncBackTo?: string | null;
    },
  ): Promise<ProviderReleaseReport | void>;
  destroyLease(config: Config, ctx: ProviderCallContext & { providerLeaseId: string }): Promise<void>;
  realizeWorkspace(
    config: Config,
    ctx: ProviderCallContext & { providerLeaseId: string; localPath: string },
  ): Promise<{ cwd: string; metadata: Record<string, unknown> }>;
  execute(
    config: Config,
    ctx: ProviderCallContext & { providerLeaseId: string },
    request: ProviderExecRequest,
  ): Promise<ExecResult>;
  /** Where the sandbox is reached now (it may have moved or died since realization). */
  resolveTarget?(
    config: Config,
    ctx: ProviderCallContext & { providerLeaseId: string; cwd: string },
  ): Promise<{ remoteCwd: string }>;
}
