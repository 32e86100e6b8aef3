// The run's last step, always taken once a lease may exist: every lease of the run gets its final status
// and its resource freed, each release is logged, and the run's error says what went wrong.
import { CancellationScope } from '@temporalio/workflow';
import type { ReleaseOutcome } from '../activities/release-lease.js';
import { leaseEventRow } from '../contracts/activity-log.js';
import { ACTIVITY_ACTIONS } from '../contracts/constants.js';
import type { RunRequestInput } from '../contracts/index.js';
import { RELEASE_ATTEMPTS, type DbSteps } from './activity-options.js';
import type { Run } from './run-state.js';

export interface ReleaseInput {
  input: RunRequestInput;
  /** The lease was neither renewed nor completed within its TTL. */
  expired: boolean;
  ttlMs: number;
  logActivity: DbSteps['logActivity'];
}

/** Releases the run's leases, even when the workflow is cancelled. */
export async function releaseLeases(run: Run, { input, expired, ttlMs, logActivity }: ReleaseInput): Promise<void> {
  const { state } = run;
  await CancellationScope.nonCancellable(async () => {
    run.setPhase('releasing');
    const outcome: ReleaseOutcome = run.cancelled
      ? 'cancelled'
      : state.error
        ? 'failed'
        : expired
          ? 'expired'
          : state.completion!.status;
    const failureReason = run.cancelled
      ? 'run cancelled'
      : state.error
        ? `${state.error.code}: ${state.error.message}`
        : expired
          ? `not renewed within ${ttlMs} ms`
          : (state.completion?.failureReason ?? null);
    try {
      const released = await run.steps.releaseLease({
        companyId: input.companyId,
        heartbeatRunId: input.heartbeatRunId,
        leaseId: state.leaseId,
        outcome,
        failureReason,
        finalAttempt: RELEASE_ATTEMPTS,
      });
      state.releasedLeases = released.leases;
      const action = expired ? ACTIVITY_ACTIONS.leaseExpired : ACTIVITY_ACTIONS.leaseReleased;
      for (const lease of released.leases) {
        await logActivity(
          leaseEventRow({
            actor: 'run',
            scope: state.workflowId,
            action,
            lease: { id: lease.id, companyId: input.companyId, heartbeatRunId: input.heartbeatRunId },
            agentId: input.agentId ?? null,
            details: {
              environmentId: lease.environmentId,
              status: lease.status,
              cleanupStatus: lease.cleanupStatus,
              failureReason: lease.failureReason,
              outcome,
            },
          }),
        );
      }
      const firstCleanupFailure = released.cleanupFailures[0];
      if (firstCleanupFailure && !state.error) {
        const message = `lease ${firstCleanupFailure.leaseId}: ${firstCleanupFailure.message}`;
        state.error = run.failureOf('lease_cleanup_failed', message);
      }
    } catch (err) {
      // The run's own error stays the headline; a release error is reported when there is none.
      if (!state.error) state.error = run.failure(err, 'lease_release_failed');
    }
    if (state.error) run.showErrorCode(state.error.code);
    run.released();
  });
}
