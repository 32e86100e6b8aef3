// The run's last step, always taken once a lease may exist: every lease of the run gets its final status
// and its resource freed (the release step logs each), and the run's error says what went wrong. A lease
// whose host is gone ends `lost` instead.
import { CancellationScope, workflowInfo } from '@temporalio/workflow';
import type { ReleaseOutcome } from '../activities/release-lease.js';
import type { RunRequestInput } from '../contracts/index.js';
import { RELEASE_ATTEMPTS, dbSteps } from './activity-options.js';
import { HostLostError, onHost } from './run-failure.js';
import { endCommands } from './run-handlers.js';
import type { Run } from './run-state.js';

export interface ReleaseInput {
  input: RunRequestInput;
  /** The lease was neither renewed nor completed within its TTL. */
  expired: boolean;
  ttlMs: number;
}

/** Releases the run's leases, even when the workflow is cancelled. */
export async function releaseLeases(run: Run, { input, expired, ttlMs }: ReleaseInput): Promise<void> {
  const { state } = run;
  await CancellationScope.nonCancellable(async () => {
    run.setPhase('releasing', { searchable: false });
    await endCommands(run);
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
      if (run.hostLost) throw new HostLostError(run.hostId!);
      const released = await onHost(run, (steps) =>
        steps.releaseLease({
          companyId: input.companyId,
          heartbeatRunId: input.heartbeatRunId,
          leaseId: state.leaseId,
          outcome,
          failureReason,
          finalAttempt: RELEASE_ATTEMPTS,
          agentId: input.agentId ?? null,
          recordKnownFor: state.result?.lease.metadata?.workspaceRealization ? state.result.lease.id : null,
          // Only when the control plane asked: a plain run's release step has the input it always had.
          ...(run.releaseRequest ?? {}),
        }),
      );
      // The rows as stored: the release step leaves out the realization record, which the run has.
      const record = state.result?.lease.metadata?.workspaceRealization;
      state.releasedLeases = released.leases.map((lease) =>
        record && lease.id === state.result?.lease.id
          ? { ...lease, metadata: { ...lease.metadata, workspaceRealization: record } }
          : lease,
      );
      const firstCleanupFailure = released.cleanupFailures[0];
      if (firstCleanupFailure && !state.error) {
        const message = `lease ${firstCleanupFailure.leaseId}: ${firstCleanupFailure.message}`;
        state.error = run.failureOf('lease_cleanup_failed', message);
      }
    } catch (err) {
      if (err instanceof HostLostError && state.leaseId) {
        // Its resource went with the host: the lease ends lost, and the reaper frees what is left if the
        // host comes back.
        const lost = await dbSteps.markLeaseLost({
          companyId: input.companyId,
          leaseId: state.leaseId,
          hostId: err.hostId,
          scope: workflowInfo().workflowId,
          actor: 'run',
          agentId: input.agentId ?? null,
        });
        run.lost(lost);
        if (!state.error) state.error = run.failureOf('environment_host_lost', err.message);
      } else if (!state.error) {
        // The run's own error stays the headline; a release error is reported when there is none.
        state.error = run.failure(err, 'lease_release_failed');
      }
    }
    run.released();
  });
}
