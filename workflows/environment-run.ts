// One heartbeat run's environment, as a durable workflow: resolve → capacity → lease → prepare (realize,
// persist, target: on the resource's host) → ready → (complete | expiry | cancel | host lost) → release.
// Deterministic code only: every effect is an activity.
//
// Recorded histories replay against this code (test/workflows/replay.test.ts): the order of what it does
// (activities, search attribute upserts, timers) must not change without a `patched()` guard.
import {
  CancellationScope,
  CancelledFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import {
  DEFAULT_CONTINUE_AFTER_EVENTS,
  DEFAULT_LEASE_TTL_MS,
  MAX_PLACEMENTS,
  type ErrorCode,
} from '../contracts/constants.js';
import type { PrepareWorkspaceInput, PreparedWorkspace } from '../activities/prepare-workspace.js';
import { poolTakenSignal, poolWorkflowId } from '../contracts/pool-messages.js';
import type {
  Environment,
  EnvironmentLease,
  RealizeRequest,
  RunRequest,
  RunWorkflowResult,
  WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { dbSteps, sharedSteps } from './activity-options.js';
import { capacityGates, giveBackSlots, waitForSlots } from './capacity.js';
import { releaseLeases } from './release.js';
import { HostLostError, applicationFailure, onHost } from './run-failure.js';
import { installHandlers } from './run-handlers.js';
import { createRunState, type Run, type RunInput } from './run-state.js';

export async function environmentRun(input: RunInput): Promise<RunWorkflowResult> {
  const run = createRunState(input);
  const { state } = run;
  const ttlMs = typeof input.leaseTtlMs === 'number' ? input.leaseTtlMs : DEFAULT_LEASE_TTL_MS;
  // The handlers come first: they accept a waitReady update sent with the start.
  installHandlers(run, {
    renewLease: () => dbSteps.renewLease({ leaseId: state.leaseId!, companyId: state.companyId, ttlMs }),
  });

  let step: ErrorCode = 'invalid_request';
  let leaseAttempted = false;
  let held: Held | null = null;
  let cancellation: unknown = null;
  const continueAfterEvents = input.continueAfterEvents ?? DEFAULT_CONTINUE_AFTER_EVENTS;
  try {
    if (input.continued) {
      // The same run, continued as new: it holds its lease, ready, and goes on from there.
      leaseAttempted = true;
      held = await holdUntilDone(run, ttlMs, continueAfterEvents);
    } else {
      step = 'environment_not_found';
      // The take from a warm pool rides along with the resolve when it may (one local activity, not two). A
      // history from before it has no `taken` in its marker: that run takes in placeAndPrepare, as it did.
      const { request, environment, realizes, taken } = await dbSteps.resolveEnvironment(input, {
        takeWarm: { ttlMs },
      });
      run.identify(environment);
      if (taken) poolTold(request, environment, taken);

      await waitForSlots(run, capacityGates(request, environment));

      leaseAttempted = true;
      const placed = await placeAndPrepare(
        run,
        { request, environment, realizes, ttlMs, taken },
        (code) => (step = code),
      );
      if (placed === 'expired' || placed === 'completed') {
        held = placed;
      } else {
        run.ready(
          {
            lease: placed.lease,
            executionTarget: placed.executionTarget,
            remoteExecution: placed.remoteExecution,
            workspaceRealization: (placed.lease.metadata?.workspaceRealization as WorkspaceRealizationRecord) ?? {},
            persistedExecutionWorkspace: placed.persistedExecutionWorkspace,
          },
          environment.driver,
        );
        held = await holdUntilDone(run, ttlMs, continueAfterEvents);
      }
    }
    if (held === 'host_lost') {
      state.error = run.failureOf('environment_host_lost', new HostLostError(run.hostId ?? '?').message);
    }
  } catch (err) {
    if (isCancellation(err) || CancellationScope.current().consideredCancelled) {
      run.cancelled = true;
      cancellation = isCancellation(err) ? err : new CancelledFailure('run cancelled');
    } else {
      state.error = run.failure(err, step);
    }
  }

  if (held === 'continue' && !run.cancelled && !state.error) {
    // History grew past the threshold: the next run of the chain holds the same lease. Handlers in flight
    // (a renew) finish first; messages after this reach the next run.
    await condition(allHandlersFinished);
    await continueAsNew<typeof environmentRun>({ ...input, continued: run.snapshot() });
  }

  // Undo, newest first, whatever happened above, and even when the workflow is cancelled.
  if (leaseAttempted) await releaseLeases(run, { input, expired: held === 'expired', ttlMs });
  await giveBackSlots(run);
  run.ended();
  // Let update handlers (complete) return; a cancel that arrives after completion does not undo it.
  await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
  if (run.cancelled) throw cancellation;
  if (state.error) throw applicationFailure(state.error);
  return {
    status: held === 'expired' ? 'expired' : state.completion!.status,
    releasedLeaseIds: state.releasedLeases.map((l) => l.id),
  };
}

interface PlaceInput {
  request: RunRequest;
  environment: Environment;
  realizes: boolean;
  ttlMs: number;
  /** What the resolve step took from the warm pool (null: none matched); undefined: it did not try. */
  taken: EnvironmentLease | null | undefined;
}

/**
 * Acquires a lease and prepares its workspace. When the worker host that holds the resource is found gone
 * before the run is ready, that lease ends `lost` and the run is placed again with a fresh acquire, which
 * a live worker takes (at most MAX_PLACEMENTS times). A run that realizes on request waits for the request
 * after its first lease; it may also be completed or expire there instead.
 */
async function placeAndPrepare(
  run: Run,
  { request, environment, realizes, ttlMs, taken }: PlaceInput,
  stepIs: (code: ErrorCode) => void,
): Promise<PreparedWorkspace | 'completed' | 'expired'> {
  for (let placement = 1; ; placement++) {
    // The first acquire is short: the search attributes say `resolving` until the run is realizing. A run
    // placed again shows `leasing` there (its host was lost).
    run.setPhase('leasing', { searchable: placement > 1 });
    stepIs('lease_acquire_failed');
    const warm = placement > 1 ? null : taken !== undefined ? taken : await takeWarm(request, environment, ttlMs);
    const lease = warm ?? (await sharedSteps.acquireLease({ request, environmentId: environment.id }));
    run.leased(environment, lease);
    // A run that realizes on request holds its lease until the control plane asks (or completes, or the
    // lease's TTL passes without either).
    if (request.realize === 'on_request' && !run.realizeRequest) {
      const asked = await awaitRealizeRequest(run, ttlMs);
      if (asked !== 'asked') return asked;
    }
    stepIs(realizes ? 'workspace_realization_failed' : 'transport_resolution_failed');
    try {
      return await prepare(run, {
        request: withRealizeRequest(request, run.realizeRequest),
        environmentId: environment.id,
        leaseId: lease.id,
        realizes,
        leaseTtlMs: ttlMs,
      });
    } catch (err) {
      if (!(err instanceof HostLostError)) throw err;
      const lost = await dbSteps.markLeaseLost({
        companyId: request.companyId,
        leaseId: lease.id,
        hostId: err.hostId,
        scope: workflowInfo().workflowId,
        actor: 'run',
        agentId: request.agentId,
      });
      run.lost(lost ?? lease);
      if (placement >= MAX_PLACEMENTS) {
        throw applicationFailure(run.failureOf('environment_host_lost', `${err.message} (placed ${placement} times)`));
      }
    }
  }
}

/**
 * A warm sandbox from the environment's pool, when it has one and the run's request matches its base (null:
 * the run acquires as before). The pool is told, so it replaces what was taken at once.
 */
async function takeWarm(
  request: RunRequest,
  environment: Environment,
  ttlMs: number,
): Promise<EnvironmentLease | null> {
  if (!environment.config.warmPool || request.realize === 'on_request' || !patched('warm-pool')) return null;
  const lease = await dbSteps.takePooled({ request, environmentId: environment.id, ttlMs });
  if (lease) poolTold(request, environment, lease);
  return lease;
}

/** The pool hears of a take, so it replaces what was taken at once. Not waited for: the run goes on. */
function poolTold(request: RunRequest, environment: Environment, lease: EnvironmentLease): void {
  getExternalWorkflowHandle(poolWorkflowId(request.companyId, environment.id))
    .signal(poolTakenSignal, lease.id)
    .catch(() => undefined);
}

type Held = 'completed' | 'expired' | 'continue' | 'host_lost';

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

/**
 * Prepares the workspace on the resource's host. When realization fails after its retry policy, the run
 * waits in awaiting_retry for an operator's retry (request.awaitRetryMs; 0: no wait) before it gives up.
 */
async function prepare(run: Run, args: PrepareWorkspaceInput): Promise<PreparedWorkspace> {
  const { state } = run;
  run.setPhase('realizing');
  const started = Date.now();
  for (;;) {
    try {
      const prepared = await onHost(run, (steps) => steps.prepareWorkspace(args));
      if (prepared.realized) run.realized(run.leasedRun!.environment.driver, Date.now() - started);
      return prepared;
    } catch (err) {
      if (isCancellation(err) || err instanceof HostLostError || args.request.awaitRetryMs === 0) throw err;
      const failure = run.failure(err, 'workspace_realization_failed');
      if (failure.code !== 'workspace_realization_failed') throw err;
      state.lastError = failure;
      run.showErrorCodeNext(failure.code);
      run.setPhase('awaiting_retry');
      run.retryRequested = false;
      if (!(await condition(() => run.retryRequested, args.request.awaitRetryMs))) throw err;
      state.operatorRetries++;
      state.lastError = null;
      run.showErrorCode(null);
      run.setPhase('realizing');
    }
  }
}

/**
 * Holds the ready run until it is completed, its lease expires (the control plane stopped renewing), or
 * its host is found gone. Once the history reaches `continueAfterEvents` (renewals add to it), the run
 * continues as new instead of holding on.
 */
async function holdUntilDone(run: Run, ttlMs: number, continueAfterEvents: number): Promise<Held> {
  const { state } = run;
  for (;;) {
    const remaining = state.expiresAt ? Date.parse(state.expiresAt) - Date.now() : ttlMs;
    if (remaining <= 0) return 'expired';
    const seen = run.renewals;
    // The expiry timer is cancelled only when a renewal replaces it: a run that ends leaves it pending
    // (dropped with the workflow), which spares its history a TimerCanceled event.
    let expired = false;
    const expiry = new CancellationScope();
    expiry
      .run(() => sleep(remaining))
      .then(
        () => (expired = true),
        () => undefined,
      );
    await condition(() => expired || state.completion !== null || run.hostLost || run.renewals !== seen);
    if (run.hostLost) return 'host_lost';
    if (state.completion) return 'completed';
    if (expired && run.renewals === seen) return 'expired';
    if (!expired) expiry.cancel();
    const info = workflowInfo();
    // Not while a command runs: its step belongs to this run of the chain, which release must end and wait
    // for (the next run would not know it). The history grows past the threshold until it ends.
    if ((info.historyLength >= continueAfterEvents || info.continueAsNewSuggested) && !run.commandsRunning()) {
      return 'continue';
    }
  }
}
