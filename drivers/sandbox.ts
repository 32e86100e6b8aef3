// The sandbox driver: one generic driver over every provider in the registry.
import {
  SandboxDriverConfig,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type DriverRealization,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { NonRetryableError } from '../contracts/errors.js';
import type { ProviderRegistry } from './providers/load.js';
import type { SandboxProvider } from './providers/contract.js';
import { provision } from './provision.js';
import { reuseKeyOf, providerOf } from '../contracts/lease-policy.js';
import type { EnvironmentDriver, StepContext } from './types.js';

export function createSandboxDriver(providers: ProviderRegistry): EnvironmentDriver {
  function unsupportedReason(environment: Environment): string | null {
    const key = String(environment.config.provider ?? '');
    return providers.get(key)
      ? null
      : `sandbox provider "${key}" is not loaded in this worker (loaded: ${providers.keys().join(', ') || 'none'})`;
  }

  function providerFor(environment: Environment): { provider: SandboxProvider<any>; config: any } {
    const reason = unsupportedReason(environment);
    if (reason) throw new NonRetryableError(reason);
    const provider = providers.get(String(environment.config.provider))!;
    return { provider, config: provider.validateConfig(environment.config) };
  }

  const callContext = (ctx: StepContext, environment: Environment, lease: EnvironmentLease) => ({
    environmentId: environment.id,
    heartbeatRunId: lease.heartbeatRunId ?? lease.id,
    attempt: ctx.attempt,
    signal: ctx.signal,
    onProgress: ctx.progress,
  });

  function requireProviderLease(lease: EnvironmentLease): string {
    if (!lease.providerLeaseId) throw new NonRetryableError(`lease ${lease.id} has no provider lease`);
    return lease.providerLeaseId;
  }

  return {
    driver: 'sandbox',
    hostBound: (environment) => providers.get(String(environment.config.provider ?? ''))?.hostBound === true,
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    unsupportedReason,
    validateConfig(config) {
      const parsed = SandboxDriverConfig.safeParse(config);
      if (!parsed.success) throw new NonRetryableError(describeZodError(parsed.error, 'config'));
      const provider = providers.get(parsed.data.provider);
      // A provider this process does not load cannot be checked here; the worker checks it at run time.
      if (provider) provider.validateConfig(parsed.data);
      return parsed.data;
    },
    async acquire(ctx, { environment, lease }) {
      const { provider, config } = providerFor(environment);
      const reuseKey = reuseKeyOf(environment, lease, Boolean(config.reuseLease));
      const acquired = await provider.acquireLease(config, {
        ...callContext(ctx, environment, lease),
        idempotencyKey: ctx.idempotencyKey,
        reuseKey,
      });
      return {
        provider: provider.key,
        providerLeaseId: acquired.providerLeaseId,
        metadata: { provider: acquired.metadata },
        expiresAt: acquired.expiresAt ? new Date(acquired.expiresAt) : null,
      };
    },
    async realize(ctx, input): Promise<DriverRealization> {
      const { environment, lease, request } = input;
      const { provider, config } = providerFor(environment);
      const providerLeaseId = requireProviderLease(lease);
      const base = callContext(ctx, environment, lease);
      const realized = await provider.realizeWorkspace(config, {
        ...base,
        providerLeaseId,
        localPath: request.workspace.cwd,
      });
      const bootstrap = await provision(
        input.realizationRequest.runtimeOverlay.provisionCommand,
        input.provisionTimeoutMs,
        realized.cwd,
        (exec) => provider.execute(config, { ...base, providerLeaseId }, exec),
      );
      return {
        version: 1,
        transport: 'sandbox',
        provider: provider.key,
        environmentId: environment.id,
        leaseId: lease.id,
        providerLeaseId,
        local: {
          path: request.workspace.cwd,
          strategy: request.workspace.strategy,
          branchName: request.workspace.branchName,
        },
        remote: { path: realized.cwd, sandboxId: providerLeaseId },
        sync: {
          strategy:
            realized.metadata.syncStrategy === 'sandbox_archive_upload_download'
              ? 'sandbox_archive_upload_download'
              : 'provider_defined',
        },
        bootstrap,
        rebuild: {
          provider: provider.key,
          providerLeaseId,
          localPath: request.workspace.cwd,
          metadata: realized.metadata,
        },
        summary: `Sandbox workspace realized at ${provider.key}:${providerLeaseId}:${realized.cwd}.`,
      };
    },
    async probe(environment) {
      const reason = unsupportedReason(environment);
      if (reason) return { ok: false, diagnostics: [reason] };
      const { provider, config } = providerFor(environment);
      return provider.probe(config);
    },
    async resolveTarget(ctx, { environment, lease, record }) {
      const { provider, config } = providerFor(environment);
      const providerLeaseId = requireProviderLease(lease);
      const cwd = record?.remote.path;
      if (!cwd) throw new Error(`sandbox lease ${lease.id} has no realized workspace`);
      const where = provider.resolveTarget
        ? await provider.resolveTarget(config, { ...callContext(ctx, environment, lease), providerLeaseId, cwd })
        : { remoteCwd: cwd };
      return {
        kind: 'remote',
        transport: 'sandbox',
        environmentId: environment.id,
        leaseId: lease.id,
        providerKey: provider.key,
        providerLeaseId,
        remoteCwd: where.remoteCwd,
        timeoutMs: config.timeoutMs ?? null,
      };
    },
    async execute(ctx, { environment, lease, record }, request) {
      const { provider, config } = providerFor(environment);
      return provider.execute(
        config,
        { ...callContext(ctx, environment, lease), providerLeaseId: requireProviderLease(lease) },
        {
          ...request,
          cwd: request.cwd ?? record?.remote.path,
        },
      );
    },
    async release(ctx, { environment, lease, keep }) {
      if (!lease.providerLeaseId) return; // the provider never made anything
      const { provider, config } = providerFor(environment);
      const realization = lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      const report = await provider.releaseLease(config, {
        ...callContext(ctx, environment, lease),
        providerLeaseId: lease.providerLeaseId,
        keep: keep || Boolean(config.reuseLease),
        syncBackTo: realization?.local.path ?? null,
      });
      return report?.syncBack ? { metadata: { syncBack: report.syncBack } } : undefined;
    },
  };
}
