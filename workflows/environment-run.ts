// One heartbeat run's environment, as a durable workflow: resolve → capacity → lease → realize → persist →
// target → ready → (complete | expiry | cancel) → release. Deterministic code only: every effect is an activity.
//
// Recorded histories replay against this code (test/workflows/replay.test.ts): the order of what it does
// (activities, patch markers, search attribute and memo upserts, timers) must not change without a patch.
import {
  CancellationScope,
  CancelledFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  isCancellation,
  patched,
  workflowInfo,
} from '@temporalio/workflow';
import { leaseEventRow, type ActivityAction } from '../contracts/activity-log.js';
import {
  ACTIVITY_ACTIONS,
  DEFAULT_CONTINUE_AFTER_EVENTS,
  DEFAULT_LEASE_TTL_MS,
  type ErrorCode,
} from '../contracts/constants.js';
import type {
  Environment,
  EnvironmentLease,
  RealizeRequest,
  ExecutionWorkspace,
  RunOutcome,
  RunRequest,
  RunRequestInput,
  WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { activitySteps, dbSteps, legacyDbSteps, localResolveTarget, type DbSteps } from './activity-options.js';
import { capacityGates, giveBackSlots, waitForSlots } from './capacity.js';
import { releaseLeases } from './release.js';
import { applicationFailure, createRunState, installHandlers, type Run, type RunInput } from './run-state.js';

export async function environmentRun(input: RunInput): Promise<RunOutcome> {
  const run = createRunState(input);
  const { state } = run;
  const ttlMs = typeof input.leaseTtlMs === 'number' ? input.leaseTtlMs : DEFAULT_LEASE_TTL_MS;
  // Chosen by a patch below, after the handlers are set.
  let db!: DbSteps;
  installHandlers(run, {
    renewLease: async () => {
      // A renew buffered before this run began (a continued run is ready at once) waits for the choice.
      await condition(() => db !== undefined);
      return db.renewLease({ leaseId: state.leaseId!, companyId: state.companyId, ttlMs });
    },
  });
  // The handlers come first: they accept a waitReady update sent with the start, before the patch markers.
  // Runs started before operator retry and lease TTLs existed replay (and finish) as they began; so do
  // runs started before the short database steps became local activities.
  const opsFeatures = patched('envrun-ops-retry-ttl');
  db = patched('envrun-local-steps') ? dbSteps : legacyDbSteps;

  let step: ErrorCode = 'invalid_request';
  let leaseAttempted = false;
  let expired = false;
  let continueAsNewNow = false;
  let cancellation: unknown = null;
  const continueAfterEvents = input.continueAfterEvents ?? DEFAULT_CONTINUE_AFTER_EVENTS;
  try {
    if (input.continued) {
      // The same run, continued as new: it holds its lease, ready, and goes on from there.
      leaseAttempted = true;
      const held = await holdUntilDone(run, ttlMs, true, continueAfterEvents);
      expired = held === 'expired';
      continueAsNewNow = held === 'continue';
    } else {
      step = 'environment_not_found';
      const resolved = await db.resolveEnvironment(input);
      const { request, environment, executionWorkspace } = resolved;
      run.identify(environment);

      await waitForSlots(run, capacityGates(request, environment));

      run.setPhase('leasing');
      step = 'lease_acquire_failed';
      leaseAttempted = true;
      let lease = await activitySteps.acquireLease({ request, environment });
      run.leased(environment, lease);
      await db.logActivity(
        leaseRow(request, ACTIVITY_ACTIONS.leaseAcquired, lease, {
          environmentId: environment.id,
          driver: environment.driver,
          leasePolicy: lease.leasePolicy,
          provider: lease.provider,
          executionWorkspaceId: request.executionWorkspaceId,
          issueId: request.issueId,
        }),
      );

      // A run that realizes on request holds its lease until the control plane asks (or completes, or the
      // lease's TTL passes without either).
      const asked = request.realize === 'on_request' ? await awaitRealizeRequest(run, ttlMs) : 'asked';
      if (asked === 'expired') expired = true;
      if (asked === 'asked') {
        const realizing = withRealizeRequest(request, run.realizeRequest);
        let record: WorkspaceRealizationRecord | null = null;
        let persistedExecutionWorkspace = executionWorkspace;
        // Whether it realizes is the driver's to say (a plugin may realize nothing); runs recorded before
        // the driver said so realize unless their driver is plugin, as they did.
        if (resolved.realizes ?? environment.driver !== 'plugin') {
          step = 'workspace_realization_failed';
          const realized = await realize(
            run,
            { request: realizing, environment, lease, executionWorkspace },
            opsFeatures,
          );
          record = realized.record;
          run.setPhase('persisting');
          ({ lease, persistedExecutionWorkspace } = await db.persistMetadata({
            environment,
            lease,
            executionWorkspaceId: request.executionWorkspaceId,
            realizationRequest: realized.realizationRequest,
            record,
            leaseTtlMs: ttlMs,
          }));
        }

        run.setPhase('resolving_target');
        step = 'transport_resolution_failed';
        // Runs started before local target resolution existed replay as they began.
        const localTarget = patched('envrun-local-target') && resolved.localTarget === true;
        // A host-bound resource is checked on its own host, never in whichever worker runs this task.
        const onHost = typeof lease.metadata?.hostId === 'string';
        const resolveTarget = localTarget && !onHost ? localResolveTarget : run.steps.resolveTarget;
        const target = await resolveTarget({ environment, lease, record });
        if (record) {
          await db.logActivity(
            leaseRow(request, ACTIVITY_ACTIONS.workspaceRealized, lease, {
              environmentId: environment.id,
              driver: environment.driver,
              summary: record.summary,
              transport: record.transport,
            }),
          );
        }
        run.ready(
          {
            lease,
            executionTarget: target.executionTarget,
            remoteExecution: target.remoteExecution,
            workspaceRealization: record ?? {},
            persistedExecutionWorkspace,
          },
          environment.driver,
          opsFeatures,
        );

        const held = await holdUntilDone(run, ttlMs, opsFeatures, continueAfterEvents);
        expired = held === 'expired';
        continueAsNewNow = held === 'continue';
      }
    }
  } catch (err) {
    if (isCancellation(err) || CancellationScope.current().consideredCancelled) {
      run.cancelled = true;
      cancellation = isCancellation(err) ? err : new CancelledFailure('run cancelled');
    } else {
      state.error = run.failure(err, step);
      run.showErrorCode(state.error.code);
    }
  }

  if (continueAsNewNow && !run.cancelled && !state.error) {
    // History grew past the threshold: the next run of the chain holds the same lease. Handlers in flight
    // (a renew) finish first; messages after this reach the next run.
    await condition(allHandlersFinished);
    await continueAsNew<typeof environmentRun>({ ...input, continued: run.snapshot() });
  }

  // Undo, newest first, whatever happened above, and even when the workflow is cancelled.
  if (leaseAttempted) await releaseLeases(run, { input, expired, ttlMs, logActivity: db.logActivity });
  await giveBackSlots(run);
  run.ended();
  // Let update handlers (complete) return; a cancel that arrives after completion does not undo it.
  await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
  if (run.cancelled) throw cancellation;
  if (state.error) throw applicationFailure(state.error);
  return { status: expired ? 'expired' : state.completion!.status, releasedLeases: state.releasedLeases };
}

/**
 * Waits in awaiting_realize for the realize update. Returns how the wait ended: asked to realize, the run
 * completed (it is released without realizing), or the lease expired.
 */
async function awaitRealizeRequest(run: Run, ttlMs: number): Promise<'asked' | 'completed' | 'expired'> {
  run.setPhase('awaiting_realize');
  const answered = await condition(() => run.realizeRequest !== null || run.state.completion !== null, ttlMs);
  if (!answered) return 'expired';
  return run.realizeRequest ? 'asked' : 'completed';
}

/** The run's request with what the realize update brought (its workspace, adapter, mode, overlay). */
function withRealizeRequest(request: RunRequest, asked: RealizeRequest | null): RunRequest {
  if (!asked) return request;
  return {
    ...request,
    workspace: asked.workspace,
    adapterType: asked.adapterType ?? request.adapterType,
    requestedMode: asked.requestedMode ?? request.requestedMode,
    runtimeOverlay: { ...request.runtimeOverlay, ...asked.runtimeOverlay },
  };
}

/** The activity-log row of an event on this run's lease. */
function leaseRow(
  request: RunRequest,
  action: ActivityAction,
  lease: EnvironmentLease,
  details: Record<string, unknown>,
) {
  return leaseEventRow({
    actor: 'run',
    scope: workflowInfo().workflowId,
    action,
    lease: { id: lease.id, companyId: request.companyId, heartbeatRunId: request.heartbeatRunId },
    agentId: request.agentId,
    details,
  });
}

interface RealizeInput {
  request: RunRequest;
  environment: Environment;
  lease: EnvironmentLease;
  executionWorkspace: ExecutionWorkspace | null;
}

/**
 * Realizes the workspace. With `awaitRetry`, once the activity's retry policy is spent the run waits in
 * awaiting_retry for an operator's retry (request.awaitRetryMs; 0: no wait) before it gives up.
 */
async function realize(run: Run, args: RealizeInput, awaitRetry: boolean) {
  const { state } = run;
  run.setPhase('realizing');
  const started = Date.now();
  let realized: Awaited<ReturnType<typeof activitySteps.realizeWorkspace>>;
  for (;;) {
    try {
      realized = await run.steps.realizeWorkspace(args);
      break;
    } catch (err) {
      if (isCancellation(err) || !awaitRetry || args.request.awaitRetryMs === 0) throw err;
      state.lastError = run.failure(err, 'workspace_realization_failed');
      run.showErrorCode(state.lastError.code);
      run.setPhase('awaiting_retry');
      run.retryRequested = false;
      if (!(await condition(() => run.retryRequested, args.request.awaitRetryMs))) throw err;
      state.operatorRetries++;
      run.showErrorCode(null);
      run.setPhase('realizing');
    }
  }
  run.realized(args.environment.driver, Date.now() - started);
  return realized;
}

/**
 * Holds the ready run until it is completed. With `expiry`, a control plane that stops renewing loses the
 * lease when it expires. Once the history reaches `continueAfterEvents` (renewals add to it), the run
 * continues as new instead of holding on.
 */
async function holdUntilDone(
  run: Run,
  ttlMs: number,
  expiry: boolean,
  continueAfterEvents: number,
): Promise<'completed' | 'expired' | 'continue'> {
  const { state } = run;
  if (!expiry) {
    await condition(() => state.completion !== null);
    return 'completed';
  }
  for (;;) {
    const remaining = state.expiresAt ? Date.parse(state.expiresAt) - Date.now() : ttlMs;
    if (remaining <= 0) return 'expired';
    const seen = run.renewals;
    await condition(() => state.completion !== null || run.renewals !== seen, remaining);
    if (state.completion) return 'completed';
    const info = workflowInfo();
    // Runs that reached the threshold before continue-as-new existed replay as they ran.
    if ((info.historyLength >= continueAfterEvents || info.continueAsNewSuggested) && patched('envrun-continue')) {
      return 'continue';
    }
  }
}
