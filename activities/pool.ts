// The warm pool's steps (workflows/warm-pool.ts) and the run's take. A pooled sandbox is acquired and
// prepared by the same steps a run's lease is (acquire-lease.ts, prepare-workspace.ts), for a request made
// from the pool's base, then marked ready with the base's fingerprint; a matching run takes it with one
// compare-and-set; the pool retires what is stale, idle too long, or dead.
import { realpath } from 'node:fs/promises';
import { Context } from '@temporalio/activity';
import {
  POOL_RUN_PREFIX,
  isPooledRunId,
  RunRequestSchema,
  WarmPoolSchema,
  type Environment,
  type EnvironmentLease,
  type ExecutionWorkspace,
  type PoolMember,
  type PooledLeaseInfo,
  type RunRequest,
  type WarmPool,
  ExecutionWorkspaceRuntimeConfig,
} from '../contracts/index.js';
import { leasePolicyOf } from '../contracts/lease-policy.js';
import { runFailure, NO_CONTEXT } from '../contracts/errors.js';
import { checkEgressGrants, checkWorkspacePath } from '../config/tenancy.js';
import { fingerprintOf } from '../drivers/pool-fingerprint.js';
import { releaseLease } from '../leases/release.js';
import { uniqueViolation } from '../store/store.js';
import { createAcquireLease } from './acquire-lease.js';
import { driverFor, stepContext, tenancyOf, type ActivityDeps } from './deps.js';
import { createPrepareWorkspace } from './prepare-workspace.js';

export interface PoolRef {
  companyId: string;
  environmentId: string;
}

/** What the pool workflow decides from: small, it is recorded in the pool's history. */
export interface PoolPlan {
  /** False: the environment is gone, archived, or has no pool any more (every member is retired). */
  active: boolean;
  reason: string | null;
  size: number;
  maxIdleMs: number;
  /** The base's fingerprint now (null when the pool is not active). */
  fingerprint: string | null;
  /** The pool's leases as stored (not the ones runs took). */
  members: PoolMember[];
  /** How many more leases the environment's maxConcurrentLeases allows (null: no limit). */
  room: number | null;
}

/** How long after a take a replacement waits before it starts (its run is preparing on the same host). */
export const REFILL_AFTER_TAKE_MS = 2_000;

const warmPoolOf = (environment: Environment | null): WarmPool | null => {
  const parsed = WarmPoolSchema.safeParse(environment?.config.warmPool);
  return parsed.success ? parsed.data : null;
};

function memberOf(lease: EnvironmentLease): PoolMember {
  const pool = (lease.metadata?.pool ?? {}) as Partial<PooledLeaseInfo>;
  const hostId = lease.metadata?.hostId;
  return {
    leaseId: lease.id,
    poolRunId: lease.heartbeatRunId ?? '',
    state: pool.state ?? 'filling',
    fingerprint: pool.fingerprint ?? null,
    readyAt: pool.readyAt ?? null,
    hostId: typeof hostId === 'string' ? hostId : null,
  };
}

/** The base's fingerprint: its ref, its provision command and the content of its fingerprint files. */
export function baseFingerprint(pool: WarmPool): Promise<string> {
  const { base } = pool;
  return fingerprintOf({
    cwd: base.cwd,
    provisionCommand: base.provisionCommand,
    ref: base.repoRef ?? null,
    files: base.fingerprintFiles,
  });
}

/** The request a pooled sandbox is prepared for: the base's folder and provision command, no run. */
export function poolRequest(environment: Environment, pool: WarmPool, poolRunId: string): RunRequest {
  const { base } = pool;
  const request = RunRequestSchema.parse({
    companyId: environment.companyId,
    heartbeatRunId: 'pool',
    environmentId: environment.id,
    leasePolicy: 'ephemeral',
    workspace: {
      baseCwd: base.cwd,
      cwd: base.cwd,
      repoUrl: base.repoUrl ?? null,
      repoRef: base.repoRef ?? null,
    },
    runtimeOverlay: { provisionCommand: base.provisionCommand },
    leaseTtlMs: pool.maxIdle,
  });
  return { ...request, heartbeatRunId: poolRunId };
}

/**
 * Whether a run's request is the pool's base: the same execution workspace (when the base names one), else
 * the same repository and ref (when it names one), else the same folder; and the same provision command.
 */
export async function matchesPool(
  pool: WarmPool,
  request: RunRequest,
  executionWorkspace: ExecutionWorkspace | null,
): Promise<boolean> {
  const { base } = pool;
  const ws = request.workspace;
  if (!ws || request.realize === 'on_request') return false;
  const stored = ExecutionWorkspaceRuntimeConfig.safeParse(executionWorkspace?.metadata?.config ?? {});
  const command =
    request.runtimeOverlay.provisionCommand ?? (stored.success ? stored.data.provisionCommand : null) ?? null;
  if (command !== base.provisionCommand) return false;
  if (base.executionWorkspaceId) return request.executionWorkspaceId === base.executionWorkspaceId;
  if (base.repoUrl) return ws.repoUrl === base.repoUrl && (ws.repoRef ?? null) === (base.repoRef ?? null);
  const real = (p: string) => realpath(p).catch(() => p);
  return (await real(ws.cwd)) === (await real(base.cwd));
}

export interface FillPoolInput extends PoolRef {
  poolRunId: string;
  /** The base's fingerprint the plan computed, before anything was copied: a change after it shows as stale. */
  fingerprint: string;
}

export interface RetirePooledInput {
  companyId: string;
  leaseId: string;
  reason: string;
}

export interface TakePooledInput {
  request: RunRequest;
  environmentId: string;
  ttlMs: number;
}

export function createPoolActivities(deps: ActivityDeps) {
  const acquire = createAcquireLease(deps);
  const prepare = createPrepareWorkspace(deps);

  return {
    /** The pool's state as stored, and what the environment's config asks of it now. */
    async planPool({ companyId, environmentId }: PoolRef): Promise<PoolPlan> {
      const [environment, leases] = await Promise.all([
        deps.store.getEnvironment(companyId, environmentId),
        deps.store.listPooledLeases(companyId, environmentId),
      ]);
      const members = leases.map(memberOf);
      const pool = warmPoolOf(environment);
      const inactive = (reason: string): PoolPlan => ({
        active: false,
        reason,
        size: 0,
        maxIdleMs: 0,
        fingerprint: null,
        members,
        room: null,
      });
      if (!environment) return inactive(`environment ${environmentId} not found`);
      if (environment.status !== 'active') return inactive(`environment ${environmentId} is ${environment.status}`);
      if (!pool) return inactive(`environment ${environmentId} has no warm pool`);
      try {
        checkWorkspacePath(tenancyOf(deps), companyId, pool.base.cwd, 'config.warmPool.base.cwd');
      } catch (err) {
        return inactive((err as Error).message);
      }
      const limit = environment.config.maxConcurrentLeases;
      const room = typeof limit === 'number' ? limit - (await deps.store.countActiveLeases(environmentId)) : null;
      return {
        active: true,
        reason: null,
        size: pool.size,
        maxIdleMs: pool.maxIdle,
        fingerprint: await baseFingerprint(pool),
        members,
        room,
      };
    },

    /**
     * Makes one pooled sandbox: acquires a lease for the pool's request, realizes the base in it and runs
     * the provision command (the run's own steps), then marks it ready. Idempotent: a retry adopts the row
     * and the resource by the pool run id. Null when the lease was retired or released meanwhile.
     */
    async fillPool(input: FillPoolInput): Promise<PoolMember | null> {
      if (!input.poolRunId.startsWith(POOL_RUN_PREFIX)) {
        throw runFailure('invalid_request', `poolRunId must start with ${POOL_RUN_PREFIX}`, NO_CONTEXT, {
          nonRetryable: true,
        });
      }
      const environment = await deps.store.getEnvironment(input.companyId, input.environmentId);
      const pool = warmPoolOf(environment);
      if (!environment || environment.status !== 'active' || !pool) {
        throw runFailure(
          'environment_inactive',
          `environment ${input.environmentId} has no active warm pool`,
          NO_CONTEXT,
          {
            nonRetryable: true,
          },
        );
      }
      // A replacement yields to the run that just took from the pool: that run is preparing on this host
      // and its first commands are what its agent waits for; copying the base and provisioning beside it
      // would take the same cores and the same worker.
      const yieldMs = await deps.store.msUntilAfterLastTake(environment.id, REFILL_AFTER_TAKE_MS);
      if (yieldMs > 0) await Context.current().sleep(yieldMs);
      const request = poolRequest(environment, pool, input.poolRunId);
      const lease = await acquire({ request, environmentId: environment.id });
      if (lease.status !== 'active' || (lease.metadata?.pool as PooledLeaseInfo | undefined)?.state === 'retiring') {
        return null;
      }
      await prepare({
        request,
        environmentId: environment.id,
        leaseId: lease.id,
        realizes: true,
        leaseTtlMs: pool.maxIdle,
      });
      const ready = await deps.store.markPooledReady(
        lease.id,
        input.fingerprint,
        new Date((deps.clock?.() ?? new Date()).getTime() + pool.maxIdle),
      );
      return ready ? memberOf(ready) : null;
    },

    /**
     * Retires a pooled sandbox, on its host: claimed first (a run that took it keeps it), then released with
     * its resource freed (nothing is synced back from a pooled sandbox). `taken`: a run has it.
     */
    async retirePooled(input: RetirePooledInput): Promise<'retired' | 'taken' | 'failed'> {
      const claimed = await deps.store.claimPooledForRetire(input.leaseId, input.reason);
      if (!claimed) {
        // Released already by an attempt of this step cut short: its cleanup is finished here.
        const ended = await deps.store.getLease(input.companyId, input.leaseId);
        if (!ended || !isPooledRunId(ended.heartbeatRunId) || ended.cleanupStatus !== 'pending') return 'taken';
        const cleaned = await releaseLease(deps, ended, { step: stepContext() });
        return cleaned.error ? 'failed' : 'retired';
      }
      const released = await releaseLease(deps, claimed, {
        endAs: 'released',
        failureReason: `retired from the warm pool: ${input.reason}`,
        step: stepContext(),
      });
      return released.error ? 'failed' : 'retired';
    },

    /** Whether a pooled sandbox's resource is still there (its provider finds it again), on its host. */
    async probePooled({ companyId, leaseId }: { companyId: string; leaseId: string }): Promise<boolean> {
      const lease = await deps.store.getLease(companyId, leaseId);
      if (!lease || lease.status !== 'active') return false;
      const environment = await deps.store.getEnvironment(companyId, lease.environmentId);
      if (!environment) return false;
      const driver = driverFor(deps, environment);
      return driver.alive ? driver.alive(stepContext(), { environment, lease }) : true;
    },

    /**
     * The run's take: the oldest ready pooled sandbox of its environment, when the run's request matches
     * the pool's base and its lease policy is ephemeral; else null (the run acquires as it always did). A
     * retried take finds the lease the first one took.
     */
    async takePooled({ request, environmentId, ttlMs }: TakePooledInput): Promise<EnvironmentLease | null> {
      const environment = await deps.store.getEnvironment(request.companyId, environmentId);
      const pool = warmPoolOf(environment);
      if (!environment || environment.status !== 'active' || !pool) return null;
      if (leasePolicyOf(request.leasePolicy, environment.config) !== 'ephemeral') return null;
      // A grant revoked since the fill: no take; the run's own acquire refuses it, naming the field.
      try {
        checkEgressGrants(tenancyOf(deps), request.companyId, environment.config);
      } catch {
        return null;
      }
      const executionWorkspace = request.executionWorkspaceId
        ? await deps.store.getExecutionWorkspace(request.companyId, request.executionWorkspaceId)
        : null;
      if (!(await matchesPool(pool, request, executionWorkspace))) return null;
      try {
        return await deps.store.takePooledLease({
          companyId: request.companyId,
          environmentId,
          heartbeatRunId: request.heartbeatRunId,
          executionWorkspaceId: request.executionWorkspaceId,
          issueId: request.issueId,
          agentId: request.agentId,
          expiresAt: new Date((deps.clock?.() ?? new Date()).getTime() + ttlMs),
          run: {
            agentId: request.agentId,
            adapterType: request.adapterType,
            executionWorkspaceId: request.executionWorkspaceId ?? request.externalExecutionWorkspaceId ?? null,
          },
          scope: stepContext().idempotencyKey,
        });
      } catch (err) {
        // The run holds a lease already (this take, retried): that one. Its workspace is leased: the
        // acquire that follows reports the conflict as it always has.
        if (uniqueViolation(err) === 'environment_leases_one_per_run') {
          return deps.store.findRunLease(request.companyId, request.heartbeatRunId);
        }
        if (uniqueViolation(err)) return null;
        throw err;
      }
    },
  };
}
