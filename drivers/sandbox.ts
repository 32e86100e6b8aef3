// The sandbox driver: one generic driver over every provider in the registry (contract version 2).
//
// Every provider call after acquire gets the lease as the provider returned it (`{providerLeaseId, metadata,
// expiresAt}`: the lease row's `providerLeaseId`, `metadata.provider` and `expiresAt`) and the run's identity.
// A process that did not acquire or resume a lease itself (another worker, this one restarted) resumes it
// first: the provider finds its resource again from the stored record, or says it is gone.
import { realpathSync } from 'node:fs';
import { posix } from 'node:path';
import {
  SandboxDriverConfig,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type RunRequest,
  type DriverRealization,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { NonRetryableError } from '../contracts/errors.js';
import { WarmPoolSchema, isPooledRunId, type PooledLeaseInfo } from '../contracts/pool.js';
import { fingerprintOf } from './pool-fingerprint.js';
import { within } from '../lib/paths.js';
import type { ProviderRegistry } from './providers/load.js';
import type { ProviderCallContext, ProviderLease, SandboxProvider } from './providers/contract.js';
import { provision } from './provision.js';
import { reuseKeyOf, providerOf } from '../contracts/lease-policy.js';
import type { EnvironmentDriver, StepContext } from './types.js';

/** envrun's own keys of a sandbox config: kept as given, whatever the provider's normalized config holds. */
const OWN_CONFIG_KEYS = Object.keys(SandboxDriverConfig.shape);

/** How many leases a process remembers having acquired or resumed; a forgotten one is resumed again. */
const HELD_LIMIT = 10_000;

/** Who the run is, as the lease row does not say: recorded on the lease at acquire (`metadata.run`). */
interface RunIdentity {
  agentId: string | null;
  adapterType: string | null;
  /** The control plane's execution workspace id when the lease has none of envrun's. */
  executionWorkspaceId?: string | null;
}

const identityOf = (request: RunRequest): RunIdentity => ({
  agentId: request.agentId,
  adapterType: request.adapterType,
  executionWorkspaceId: request.executionWorkspaceId ?? request.externalExecutionWorkspaceId ?? null,
});

/** Synchronous: three of these sit between a warm run's upload and its ready, each microseconds long. */
function realOrSelf(path: string): string {
  try {
    return realpathSync.native(path);
  } catch {
    return path;
  }
}

/**
 * Refuses a realized workspace at the control plane's own folder: a provider that lost its sandbox must
 * never have the provision command, or the agent, run there. The cwd is a path inside the sandbox, which
 * may share a prefix with host paths by chance (`/workspace`, `/home/user`), so only a cwd that is the
 * folder or inside it is refused; a host folder the provider reports (`metadata.hostPath`) is refused when
 * it is the folder, inside it, or above it.
 */
function refuseLocalCwd(
  key: string,
  realized: { cwd: string; metadata: Record<string, unknown> },
  localPath: string,
): void {
  const l = posix.resolve(localPath);
  const lReal = realOrSelf(l);
  const c = posix.resolve(realized.cwd);
  const hostPath = typeof realized.metadata.hostPath === 'string' ? posix.resolve(realized.metadata.hostPath) : null;
  const cwdHit = within(c, l) || within(realOrSelf(c), lReal);
  const hostHit =
    hostPath !== null &&
    [hostPath, realOrSelf(hostPath)].some((h) => within(h, l) || within(h, lReal) || within(l, h) || within(lReal, h));
  if (cwdHit || hostHit)
    throw new NonRetryableError(
      `sandbox provider "${key}" realized the workspace at ${cwdHit ? realized.cwd : hostPath}, which is the control plane's own workspace folder ${localPath}${cwdHit ? ' (or inside it)' : ' (or inside or above it)'}: refused, nothing was provisioned`,
    );
}

function pooledInfo(lease: EnvironmentLease): PooledLeaseInfo | null {
  const pool = lease.metadata?.pool;
  return pool && typeof pool === 'object' ? (pool as PooledLeaseInfo) : null;
}

/**
 * Whether the pool's provisioning holds for this run: the run's ref, provision command and lockfiles give
 * the fingerprint the sandbox was provisioned with. Any difference runs the command again, as a cold run.
 */
async function provisionedByPool(
  environment: Environment,
  pooled: PooledLeaseInfo,
  request: RunRequest & { workspace: { cwd: string; repoRef: string | null } },
  command: string,
): Promise<boolean> {
  const pool = WarmPoolSchema.safeParse(environment.config.warmPool);
  if (!pool.success || !pooled.fingerprint) return false;
  const fingerprint = await fingerprintOf({
    cwd: request.workspace.cwd,
    provisionCommand: command,
    ref: request.workspace.repoRef ?? null,
    files: pool.data.base.fingerprintFiles,
  });
  return fingerprint === pooled.fingerprint;
}

/**
 * A warm pool's fill provisions at a lower CPU priority when its sandbox shares the worker's host: it is
 * background work, and the runs on that host (one that just took from the pool, first) come first.
 */
function backgroundOnHost(
  provider: SandboxProvider<any>,
  lease: EnvironmentLease,
  exec: { command: string; args: string[] },
): { command: string; args: string[] } | null {
  if (!provider.hostBound || !isPooledRunId(lease.heartbeatRunId)) return null;
  return { command: 'nice', args: ['-n', '10', exec.command, ...exec.args] };
}

export function createSandboxDriver(providers: ProviderRegistry): EnvironmentDriver {
  /** The leases this process acquired or resumed (provider key and provider lease id), oldest first. */
  const held = new Set<string>();
  const heldKey = (provider: SandboxProvider<any>, providerLeaseId: string) => `${provider.key}\n${providerLeaseId}`;
  function hold(provider: SandboxProvider<any>, lease: ProviderLease): void {
    const key = heldKey(provider, lease.providerLeaseId);
    held.delete(key);
    held.add(key);
    if (held.size > HELD_LIMIT) held.delete(held.values().next().value!);
  }

  function unsupportedReason(environment: Environment): string | null {
    const key = String(environment.config.provider ?? '');
    const provider = providers.get(key);
    if (!provider)
      return `sandbox provider "${key}" is not loaded in this worker (loaded: ${providers.keys().join(', ') || 'none'})`;
    const wantsAllowlist = environment.config.network === 'allowlist' || environment.config.egress !== undefined;
    if (wantsAllowlist && !provider.egressAllowlist)
      return `sandbox provider "${key}" cannot enforce an egress allowlist (config.network "allowlist", config.egress): refused rather than ignored`;
    return null;
  }

  async function providerFor(environment: Environment): Promise<{ provider: SandboxProvider<any>; config: any }> {
    const reason = unsupportedReason(environment);
    if (reason) throw new NonRetryableError(reason);
    const provider = providers.get(String(environment.config.provider))!;
    return { provider, config: (await provider.validateConfig(environment.config)).config };
  }

  function runIdentity(lease: EnvironmentLease): RunIdentity {
    const metadata = lease.metadata ?? {};
    const realized = (metadata.workspaceRealization as WorkspaceRealizationRecord | undefined)?.rebuild?.run;
    const run = (realized ?? metadata.run) as Partial<RunIdentity> | undefined;
    const text = (v: unknown) => (typeof v === 'string' ? v : null);
    return {
      agentId: text(run?.agentId),
      adapterType: text(run?.adapterType),
      executionWorkspaceId: text(run?.executionWorkspaceId),
    };
  }

  const callContext = (
    ctx: StepContext,
    environment: Environment,
    lease: EnvironmentLease,
    run: RunIdentity = runIdentity(lease),
  ): ProviderCallContext => ({
    companyId: lease.companyId,
    environmentId: environment.id,
    heartbeatRunId: lease.heartbeatRunId ?? lease.id,
    leaseId: lease.id,
    agentId: run.agentId,
    adapterType: run.adapterType,
    executionWorkspaceId: lease.executionWorkspaceId ?? run.executionWorkspaceId ?? null,
    issueId: lease.issueId,
    requestedExpiresAt: lease.expiresAt,
    attempt: ctx.attempt,
    signal: ctx.signal,
    onProgress: ctx.progress,
  });

  /** The provider's record of the lease as stored: a resume at realize is kept on the realization record. */
  function storedLease(lease: EnvironmentLease): ProviderLease {
    if (!lease.providerLeaseId) throw new NonRetryableError(`lease ${lease.id} has no provider lease`);
    const metadata = lease.metadata ?? {};
    const realized = (metadata.workspaceRealization as WorkspaceRealizationRecord | undefined)?.rebuild;
    const resumed = realized?.providerLease as ProviderLease | undefined;
    const stored =
      resumed?.providerLeaseId === lease.providerLeaseId ? resumed.metadata : (metadata.provider as unknown);
    return {
      providerLeaseId: lease.providerLeaseId,
      metadata: stored && typeof stored === 'object' ? (stored as Record<string, unknown>) : {},
      expiresAt: lease.expiresAt,
    };
  }

  /**
   * The lease for a call: as stored when this process holds it, else resumed from the stored record (null:
   * the resource is gone). `resumed` says whether the provider was asked.
   */
  async function currentLease(
    provider: SandboxProvider<any>,
    config: unknown,
    base: ProviderCallContext,
    lease: EnvironmentLease,
    resume = false,
  ): Promise<{ lease: ProviderLease | null; resumed: boolean }> {
    const stored = storedLease(lease);
    if (!resume && held.has(heldKey(provider, stored.providerLeaseId))) return { lease: stored, resumed: false };
    const resumed = await provider.resumeLease(config, { ...base, lease: stored });
    if (resumed) hold(provider, resumed);
    return { lease: resumed, resumed: true };
  }

  function gone(provider: SandboxProvider<any>, lease: EnvironmentLease): NonRetryableError {
    return new NonRetryableError(
      `sandbox provider "${provider.key}" no longer has the resource of lease ${lease.id} (${lease.providerLeaseId})`,
    );
  }

  return {
    driver: 'sandbox',
    hostBound: (environment) => providers.get(String(environment.config.provider ?? ''))?.hostBound === true,
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    unsupportedReason,
    async validateConfig(config) {
      const parsed = SandboxDriverConfig.safeParse(config);
      if (!parsed.success) throw new NonRetryableError(describeZodError(parsed.error, 'config'));
      const provider = providers.get(parsed.data.provider);
      // A provider this process does not load cannot be checked here; the worker checks it at run time.
      if (!provider) return parsed.data;
      const normalized = (await provider.validateConfig(parsed.data)).config as Record<string, unknown>;
      const own = Object.fromEntries(
        OWN_CONFIG_KEYS.filter((k) => parsed.data[k] !== undefined).map((k) => [k, parsed.data[k]]),
      );
      return { ...normalized, ...own };
    },
    async acquire(ctx, { environment, lease, request }) {
      const { provider, config } = await providerFor(environment);
      const reuseKey = reuseKeyOf(environment, lease);
      const run = identityOf(request);
      const acquired = await provider.acquireLease(config, {
        ...callContext(ctx, environment, lease, run),
        idempotencyKey: ctx.idempotencyKey,
        reuseKey,
      });
      hold(provider, acquired);
      return {
        provider: provider.key,
        providerLeaseId: acquired.providerLeaseId,
        metadata: { provider: acquired.metadata, run },
        expiresAt: acquired.expiresAt ? new Date(acquired.expiresAt) : null,
      };
    },
    async realize(ctx, input): Promise<DriverRealization> {
      const { environment, lease, request } = input;
      const { provider, config } = await providerFor(environment);
      const run = identityOf(request);
      const base = callContext(ctx, environment, lease, run);
      // A sandbox a run took from the warm pool: its provider hears of the run through a resume.
      const pooled = pooledInfo(lease);
      const current = await currentLease(provider, config, base, lease, pooled?.state === 'taken');
      if (!current.lease) throw gone(provider, lease);
      const providerLease = current.lease;
      const { providerLeaseId } = providerLease;
      const realized = await provider.realizeWorkspace(config, {
        ...base,
        lease: providerLease,
        localPath: request.workspace.cwd,
      });
      refuseLocalCwd(provider.key, realized, request.workspace.cwd);
      const command = input.realizationRequest.runtimeOverlay.provisionCommand;
      const bootstrap =
        pooled?.state === 'taken' && command && (await provisionedByPool(environment, pooled, request, command))
          ? { command, exitCode: 0, durationMs: 0, provisionedByPool: true }
          : await provision(command, input.provisionTimeoutMs, realized.cwd, (exec) =>
              provider.execute(
                config,
                { ...base, lease: providerLease },
                { ...exec, ...backgroundOnHost(provider, lease, exec), bypassSession: true, phase: 'provision' },
              ),
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
          run: { ...run },
          // The lease as resumed here: later calls start from it rather than from the one acquire stored.
          ...(current.resumed ? { providerLease: { ...providerLease } } : {}),
        },
        summary: `Sandbox workspace realized at ${provider.key}:${providerLeaseId}:${realized.cwd}.`,
      };
    },
    async probe(environment) {
      const reason = unsupportedReason(environment);
      if (reason) return { ok: false, diagnostics: [{ severity: 'error', message: reason }] };
      const { provider, config } = await providerFor(environment);
      return provider.probe(config, { companyId: environment.companyId, environmentId: environment.id });
    },
    async resolveTarget(ctx, { environment, lease, record }) {
      const { provider, config } = await providerFor(environment);
      const cwd = record?.remote.path;
      if (!cwd) throw new Error(`sandbox lease ${lease.id} has no realized workspace`);
      const base = callContext(ctx, environment, lease);
      let providerLeaseId = storedLease(lease).providerLeaseId;
      let where = { remoteCwd: cwd };
      if (provider.resolveTarget) {
        const current = await currentLease(provider, config, base, lease);
        if (!current.lease) throw gone(provider, lease);
        providerLeaseId = current.lease.providerLeaseId;
        where = await provider.resolveTarget(config, { ...base, lease: current.lease, cwd });
      }
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
      const { provider, config } = await providerFor(environment);
      const base = callContext(ctx, environment, lease);
      const current = await currentLease(provider, config, base, lease);
      if (!current.lease) throw gone(provider, lease);
      return provider.execute(
        config,
        { ...base, lease: current.lease },
        {
          ...request,
          cwd: request.cwd ?? record?.remote.path,
          phase: 'run',
        },
      );
    },
    async release(ctx, { environment, lease, keep, cancelActiveWork = false, stopKept = false }) {
      if (!lease.providerLeaseId) return; // the provider never made anything
      const { provider, config } = await providerFor(environment);
      const realization = lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      const base = callContext(ctx, environment, lease);
      const current = await currentLease(provider, config, base, lease);
      // The resource is gone already: nothing is left to free, and no receipt can be had.
      if (!current.lease) return { metadata: { termination: { state: 'gone' } } };
      const report = await provider.releaseLease(config, {
        ...base,
        lease: current.lease,
        keep,
        cancelActiveWork,
        // A sandbox the pool made and no run took holds the base's provisioning, nothing of a run's.
        syncBackTo: isPooledRunId(lease.heartbeatRunId) ? null : (realization?.local.path ?? null),
        realizedCwd: realization?.remote.path ?? null,
        stopKept: keep && stopKept,
      });
      if (report.receipt?.state === 'destroyed') held.delete(heldKey(provider, lease.providerLeaseId));
      const metadata = {
        ...(report.syncBack ? { syncBack: report.syncBack } : {}),
        ...(report.receipt ? { termination: report.receipt } : {}),
      };
      return Object.keys(metadata).length ? { metadata } : undefined;
    },
    async alive(ctx, { environment, lease }) {
      if (!lease.providerLeaseId) return false;
      const { provider, config } = await providerFor(environment);
      return (await currentLease(provider, config, callContext(ctx, environment, lease), lease, true)).lease !== null;
    },
    async destroy(ctx, { environment, lease, cancelActiveWork }) {
      if (!lease.providerLeaseId) return; // the provider never made anything
      const { provider, config } = await providerFor(environment);
      const base = callContext(ctx, environment, lease);
      const current = await currentLease(provider, config, base, lease);
      if (!current.lease) return { metadata: { termination: { state: 'gone' } } };
      const report = await provider.destroyLease(config, { ...base, lease: current.lease, cancelActiveWork });
      held.delete(heldKey(provider, lease.providerLeaseId));
      return report.receipt ? { metadata: { termination: report.receipt } } : undefined;
    },
  };
}
