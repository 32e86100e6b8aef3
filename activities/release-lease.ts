import { Context } from '@temporalio/activity';
import {
  ACTIVITY_ACTIONS,
  type Environment,
  type EnvironmentLease,
  type ProviderResourceDisposition,
} from '../contracts/index.js';
import { finalLeaseStatus, type ReleaseOutcome } from '../contracts/lease-policy.js';
import { releaseLease as releaseOne } from '../leases/release.js';
import { failureContext, stepContext, type ActivityDeps } from './deps.js';
import { NO_CONTEXT, runFailure } from '../contracts/errors.js';

export type { ReleaseOutcome } from '../contracts/lease-policy.js';

export interface ReleaseLeaseInput {
  companyId: string;
  heartbeatRunId: string;
  /** The lease the workflow knows it holds (null when acquire never answered). */
  leaseId: string | null;
  outcome: ReleaseOutcome;
  failureReason: string | null;
  /** On this attempt a provider that still fails is recorded as `cleanupStatus: failed` instead of retried. */
  finalAttempt: number;
  /** The run's agent, for the activity-log rows this step writes. */
  agentId?: string | null;
  /** This lease comes back without its realization record: the run has it already and puts it back. */
  recordKnownFor?: string | null;
  /** The provider stops commands still running instead of waiting for them (the control plane asked). */
  cancelActiveWork?: boolean;
  /** What becomes of the provider resource, as the control plane asked; absent: the lease policy decides. */
  providerResourceDisposition?: ProviderResourceDisposition;
}

export interface CleanupFailure {
  leaseId: string;
  message: string;
}

export interface ReleaseLeaseOutput {
  leases: EnvironmentLease[];
  cleanupFailures: CleanupFailure[];
}

/**
 * The last step, always run: every lease of the run gets its final status, then its provider resource is
 * freed. One lease's provider error never stops the others. A provider that fails is retried by the
 * activity's policy; on the final attempt its lease is recorded `cleanupStatus: failed` and reported, so
 * the workflow ends with `lease_cleanup_failed` instead of losing the error.
 */
export function createReleaseLease(deps: ActivityDeps) {
  return async function releaseLease(input: ReleaseLeaseInput): Promise<ReleaseLeaseOutput> {
    const all = await deps.store.listRunLeases(input.companyId, input.heartbeatRunId);
    if (input.leaseId && !all.some((l) => l.id === input.leaseId)) {
      throw runFailure(
        'lease_release_failed',
        `lease ${input.leaseId} of run ${input.heartbeatRunId} no longer exists`,
        NO_CONTEXT,
        { nonRetryable: true },
      );
    }
    const finalAttempt = Context.current().info.attempt >= input.finalAttempt;
    const step = stepContext();
    // Heartbeats while providers release (a sync-back can be long): a worker that dies here, or a task the
    // server never handed over, is retried after the heartbeat timeout, not the step's whole 5 minutes.
    const beat = setInterval(() => step.beat(), 2_000);
    try {
      const cleanupFailures: CleanupFailure[] = [];
      const retryable: string[] = [];
      const environments = new Map<string, Environment | null>();
      const result: EnvironmentLease[] = [];
      for (const lease of all) {
        // A lease lost with its host is freed there by the reaper if the host comes back, not from here.
        if (lease.status === 'lost' || (lease.status !== 'active' && lease.cleanupStatus !== 'pending')) {
          result.push(lease);
          continue;
        }
        const released = await releaseOne(deps, lease, {
          ...(lease.status === 'active'
            ? {
                endAs: finalLeaseStatus(input.outcome, lease),
                failureReason: input.outcome === 'succeeded' ? null : (input.failureReason ?? input.outcome),
              }
            : {}),
          step,
          recordFailure: finalAttempt,
          environments,
          disposition: input.providerResourceDisposition ?? null,
          cancelActiveWork: input.cancelActiveWork === true,
          log: (stored) => ({
            actor: 'run',
            scope: step.idempotencyKey,
            action: input.outcome === 'expired' ? ACTIVITY_ACTIONS.leaseExpired : ACTIVITY_ACTIONS.leaseReleased,
            lease: stored,
            agentId: input.agentId ?? null,
            details: {
              environmentId: stored.environmentId,
              status: stored.status,
              cleanupStatus: stored.cleanupStatus,
              failureReason: stored.failureReason,
              outcome: input.outcome,
              ...(input.providerResourceDisposition
                ? { providerResourceDisposition: input.providerResourceDisposition }
                : {}),
              ...(input.cancelActiveWork ? { cancelActiveWork: true } : {}),
            },
          }),
        });
        if (released.error && finalAttempt) cleanupFailures.push({ leaseId: lease.id, message: released.error });
        else if (released.error) retryable.push(`${lease.id}: ${released.error}`);
        result.push(released.lease);
      }
      if (retryable.length > 0) {
        const env = [...environments.values()].find((e) => e) ?? null;
        throw runFailure(
          'lease_cleanup_failed',
          `provider cleanup failed: ${retryable.join('; ')}`,
          env ? failureContext(deps, env) : NO_CONTEXT,
          { nonRetryable: false },
        );
      }
      return {
        leases: result.map((l) => (l.id === input.recordKnownFor ? withoutRecord(l) : l)),
        cleanupFailures,
      };
    } finally {
      clearInterval(beat);
    }
  };
}

/** A lease without its realization record, for a payload whose reader has the record already. */
function withoutRecord(lease: EnvironmentLease): EnvironmentLease {
  if (!lease.metadata || !('workspaceRealization' in lease.metadata)) return lease;
  const { workspaceRealization: _record, ...metadata } = lease.metadata;
  return { ...lease, metadata };
}
