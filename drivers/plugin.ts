// The plugin driver: envrun holds the lease; the plugin loaded for the environment's `pluginKey`
// (drivers/plugins/) acquires, releases and probes its resource, keyed by the run's workflow id. A plugin
// runs the agent itself unless it offers a target: by default nothing is realized (`{}`) and the target is
// null (docs/design.md).
import {
  PluginDriverConfig,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type ExecutionTarget,
  type DriverRealization,
} from '../contracts/index.js';
import { NonRetryableError } from '../contracts/errors.js';
import { PluginRegistry } from './plugins/registry.js';
import type { EnvRunPlugin, PluginCallContext, PluginLeaseRef } from './plugins/types.js';
import { providerOf, reuseKeyOf } from '../contracts/lease-policy.js';
import type { EnvironmentDriver, StepContext } from './types.js';

function parse(config: Record<string, unknown>): PluginDriverConfig {
  const parsed = PluginDriverConfig.safeParse(config);
  if (!parsed.success) throw new NonRetryableError(describeZodError(parsed.error, 'config'));
  return parsed.data;
}

/** The plugin's own part of a config, through its `validateConfig`: a refusal names the plugin. */
function pluginConfig(plugin: EnvRunPlugin, config: PluginDriverConfig): Record<string, unknown> {
  if (!plugin.validateConfig) return config.driverConfig;
  try {
    return plugin.validateConfig({ driverKey: config.driverKey, driverConfig: config.driverConfig });
  } catch (err) {
    throw new NonRetryableError(`plugin "${plugin.key}" refused the config: ${(err as Error).message}`);
  }
}

export function createPluginDriver(plugins: PluginRegistry = new PluginRegistry()): EnvironmentDriver {
  function unsupportedReason(environment: Environment): string | null {
    const key = String(environment.config.pluginKey ?? '');
    return plugins.get(key)
      ? null
      : `plugin "${key}" is not loaded in this worker (loaded: ${plugins.keys().join(', ') || 'none'})`;
  }

  function pluginFor(environment: Environment): { plugin: EnvRunPlugin; config: PluginDriverConfig } {
    const reason = unsupportedReason(environment);
    if (reason) throw new NonRetryableError(reason);
    const plugin = plugins.get(String(environment.config.pluginKey))!;
    const config = parse(environment.config);
    return { plugin, config: { ...config, driverConfig: pluginConfig(plugin, config) } };
  }

  const callContext = (
    ctx: StepContext,
    environment: Environment,
    lease: EnvironmentLease,
    config: PluginDriverConfig,
  ): PluginCallContext => ({
    environmentId: environment.id,
    companyId: environment.companyId,
    heartbeatRunId: lease.heartbeatRunId ?? lease.id,
    driverKey: config.driverKey,
    driverConfig: config.driverConfig,
    attempt: ctx.attempt,
    signal: ctx.signal,
    onProgress: ctx.progress,
  });

  /** The plugin's lease: absent when the plugin never made one (also on leases of the former stub driver). */
  function leaseRef(lease: EnvironmentLease): PluginLeaseRef | null {
    const metadata = lease.metadata?.plugin;
    if (!lease.providerLeaseId || !metadata || typeof metadata !== 'object') return null;
    return { providerLeaseId: lease.providerLeaseId, metadata: metadata as Record<string, unknown> };
  }

  function requireLeaseRef(lease: EnvironmentLease): PluginLeaseRef {
    const ref = leaseRef(lease);
    if (!ref) throw new NonRetryableError(`lease ${lease.id} has no plugin lease`);
    return ref;
  }

  return {
    driver: 'plugin',
    realizes: (environment) => {
      if (unsupportedReason(environment)) return false;
      try {
        const { plugin, config } = pluginFor(environment);
        if (!plugin.realize) return false;
        return plugin.realizes?.({ driverKey: config.driverKey, driverConfig: config.driverConfig }) ?? true;
      } catch {
        return false; // a config the plugin refuses fails the lease step, which says why
      }
    },
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    unsupportedReason,
    validateConfig(config) {
      const parsed = parse(config);
      const plugin = plugins.get(parsed.pluginKey);
      // A plugin this process does not load cannot be checked here; the worker checks it at run time.
      if (plugin) pluginConfig(plugin, parsed);
      return parsed;
    },
    async probe(environment) {
      const reason = unsupportedReason(environment);
      if (reason) return { ok: false, diagnostics: [{ severity: 'error', message: reason }] };
      const { plugin, config } = pluginFor(environment);
      if (!plugin.probe)
        return {
          ok: true,
          diagnostics: [{ severity: 'info', message: `plugin "${plugin.key}" has nothing to probe` }],
        };
      const probed = await plugin.probe({
        environmentId: environment.id,
        driverKey: config.driverKey,
        driverConfig: config.driverConfig,
      });
      // A plugin's lines carry no severity: errors when its probe failed, information otherwise.
      const severity = probed.ok ? 'info' : 'error';
      return { ok: probed.ok, diagnostics: probed.diagnostics.map((message) => ({ severity, message })) };
    },
    async acquire(ctx, { environment, lease }) {
      const { plugin, config } = pluginFor(environment);
      const acquired = await plugin.acquire({
        ...callContext(ctx, environment, lease, config),
        idempotencyKey: ctx.idempotencyKey,
        reuseKey: reuseKeyOf(environment, lease),
      });
      return {
        provider: plugin.key,
        providerLeaseId: acquired.providerLeaseId,
        metadata: { pluginKey: plugin.key, driverKey: config.driverKey, plugin: acquired.metadata ?? {} },
        expiresAt: acquired.expiresAt ? new Date(acquired.expiresAt) : null,
      };
    },
    // Not called by today's workflow, which skips realization for plugin environments (docs/design.md).
    async realize(ctx, input): Promise<DriverRealization> {
      const { environment, lease, request, realizationRequest } = input;
      const { plugin, config } = pluginFor(environment);
      if (!plugin.realize) throw new NonRetryableError(`plugin "${plugin.key}" does not realize workspaces`);
      const ref = requireLeaseRef(lease);
      const { providerLeaseId } = ref;
      const realized = await plugin.realize({
        ...callContext(ctx, environment, lease, config),
        ...ref,
        realizationRequest,
        provisionTimeoutMs: input.provisionTimeoutMs,
      });
      const command = realizationRequest.runtimeOverlay.provisionCommand;
      if (command && realized.bootstrap?.command !== command) {
        throw new NonRetryableError(`plugin "${plugin.key}" did not report running the provision command`);
      }
      return {
        version: 1,
        transport: 'plugin',
        provider: plugin.key,
        environmentId: environment.id,
        leaseId: lease.id,
        providerLeaseId,
        local: {
          path: request.workspace.cwd,
          strategy: request.workspace.strategy,
          branchName: request.workspace.branchName,
        },
        remote: { path: realized.cwd },
        sync: { strategy: 'provider_defined' },
        bootstrap: realized.bootstrap ?? { command: null, exitCode: null, durationMs: null },
        rebuild: {
          plugin: plugin.key,
          driverKey: config.driverKey,
          providerLeaseId,
          metadata: realized.metadata ?? {},
        },
        summary: realized.summary ?? `Plugin workspace realized at ${plugin.key}:${providerLeaseId}:${realized.cwd}.`,
      };
    },
    async resolveTarget(ctx, { environment, lease, record }): Promise<ExecutionTarget> {
      const { plugin, config } = pluginFor(environment);
      const ref = leaseRef(lease);
      if (!plugin.resolveTarget || !ref) return null; // no target offered, or a lease the plugin never made
      const target = await plugin.resolveTarget({
        ...callContext(ctx, environment, lease, config),
        ...ref,
        cwd: record?.remote.path ?? null,
      });
      return target && { ...target, environmentId: environment.id, leaseId: lease.id };
    },
    async execute() {
      throw new NonRetryableError('the plugin driver has no execution target: its plugin runs commands itself');
    },
    async release(ctx, { environment, lease, keep }) {
      const ref = leaseRef(lease);
      if (!ref) return; // the plugin never made anything
      const { plugin, config } = pluginFor(environment);
      await plugin.release({ ...callContext(ctx, environment, lease, config), ...ref, keep });
    },
  };
}
