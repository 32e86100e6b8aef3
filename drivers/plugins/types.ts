// The plugin contract. A plugin is a module of the control plane that manages its own resource (a VM, a
// remote workspace, ...): envrun holds the lease and delegates acquire, release and probe (and, when the
// plugin offers them, realize and target resolution) to it. envrun's core never names a plugin.
//
// A module exports `createPlugin({ dataDir })` (named or default) returning an EnvRunPlugin, or a `plugin`
// object; `ENVRUN_PLUGIN_MODULES=./a.mjs,./b.mjs` loads it. An environment `{driver: "plugin", config:
// {pluginKey, driverKey, driverConfig}}` is served by the plugin whose key is `pluginKey`; `driverKey`
// picks one of the kinds of resource the plugin offers and `driverConfig` is the plugin's own config.
// Every reply is checked with zod (drivers/plugins/checked.ts). An Error thrown with `nonRetryable: true`
// fails the step at once; any other thrown error is retried by the step's retry policy.
import type { WorkspaceRealizationRequest } from '../../contracts/index.js';

/** What a plugin's probe says: whether the environment is usable, and lines for operators. */
export interface PluginProbeResult {
  ok: boolean;
  diagnostics: string[];
}

/** The environment a call is about: the plugin's own part of its config, after `validateConfig`. */
export interface PluginConfigRef {
  environmentId: string;
  driverKey: string;
  driverConfig: Record<string, unknown>;
}

export interface PluginCallContext extends PluginConfigRef {
  companyId: string;
  heartbeatRunId: string;
  /** The activity attempt (1-based). */
  attempt: number;
  signal?: AbortSignal | undefined;
  onProgress?: ((line: string) => void) | undefined;
}

/** A lease the plugin made: its id and the metadata it returned at acquire, handed back on every later call. */
export interface PluginLeaseRef {
  providerLeaseId: string;
  metadata: Record<string, unknown>;
}

export interface PluginLease {
  /** The plugin's id of the resource, stored on the lease (`providerLeaseId`) and handed back later. */
  providerLeaseId: string;
  /** Stored on the lease under `metadata.plugin` and handed back later; `{}` when absent. */
  metadata?: Record<string, unknown> | undefined;
  /** ISO 8601; the resource's own expiry, if it has one (the run's lease TTL otherwise). */
  expiresAt?: string | null | undefined;
}

export interface PluginRealized {
  /** Where the workspace is, in the plugin's terms (a path on its host). */
  cwd: string;
  metadata?: Record<string, unknown> | undefined;
  /** What the provision command did; required when the request had one (the plugin runs it). */
  bootstrap?: { command: string | null; exitCode: number | null; durationMs: number | null } | undefined;
  /** One line for operators; a default naming the plugin otherwise. */
  summary?: string | undefined;
}

/**
 * How the agent adapter reaches the plugin's resource. envrun adds `environmentId` and `leaseId`; `null`
 * means the plugin runs the agent itself (nothing to reach).
 */
export type PluginTarget =
  | { kind: 'local'; cwd: string }
  | {
      kind: 'remote';
      transport: 'ssh';
      remoteCwd: string;
      spec: {
        host: string;
        port: number;
        username: string;
        remoteWorkspacePath: string;
        remoteCwd: string;
        strictHostKeyChecking: boolean;
        knownHosts: string | null;
        /** A reference only (`env:NAME`, `file:/path`), never the key. */
        privateKeySecretRef: string;
      };
    }
  | null;

export interface EnvRunPlugin {
  /** Matched against environments' `config.pluginKey`: `^[a-z0-9][a-z0-9._-]*$`. */
  readonly key: string;
  /**
   * Checks `driverConfig` for `driverKey` (throws an Error whose message names the field); the result is
   * what every other call gets. Absent: every driver key and config is accepted as is.
   */
  validateConfig?(input: { driverKey: string; driverConfig: Record<string, unknown> }): Record<string, unknown>;
  /** Diagnostics for operators (`envrun env probe`). Absent: nothing to probe. */
  probe?(ctx: PluginConfigRef): Promise<PluginProbeResult>;
  /**
   * Creates the lease's resource, or, for an idempotency key (the run's workflow id) it has seen before,
   * adopts the one it made then: a retry after a timeout or a dead worker must not make a second one.
   * `reuseKey` is set when later runs should share the resource (reuse policies).
   */
  acquire(ctx: PluginCallContext & { idempotencyKey: string; reuseKey: string | null }): Promise<PluginLease>;
  /** Ends this run's use of the resource; `keep` when it outlives the lease (reuse, retained). Idempotent. */
  release(ctx: PluginCallContext & PluginLeaseRef & { keep: boolean }): Promise<void>;
  /**
   * Whether runs on this driver key and config realize a workspace (absent: whenever `realize` exists).
   * A plugin whose resources carry no workspace of envrun's leaves the realization `{}`.
   */
  realizes?(input: { driverKey: string; driverConfig: Record<string, unknown> }): boolean;
  /** Puts the run's workspace in place and runs its provision command. */
  realize?(
    ctx: PluginCallContext &
      PluginLeaseRef & {
        realizationRequest: WorkspaceRealizationRequest;
        provisionTimeoutMs: number;
      },
  ): Promise<PluginRealized>;
  /** Where the agent reaches the resource now; `cwd` is the realized workspace, if any. */
  resolveTarget?(ctx: PluginCallContext & PluginLeaseRef & { cwd: string | null }): Promise<PluginTarget>;
}
