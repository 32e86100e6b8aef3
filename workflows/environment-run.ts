// One heartbeat run's environment, as a durable workflow: resolve → lease → realize → persist → target →
// ready → (complete | cancel) → release. Deterministic code only: every effect is an activity.
import {
  ActivityCancellationType, ActivityFailure, ApplicationFailure, CancellationScope, CancelledFailure, getExternalWorkflowHandle, allHandlersFinished, condition,
  isCancellation, metricMeter, patched, proxyActivities, proxyLocalActivities, upsertMemo, setCurrentDetails, setHandler, upsertSearchAttributes, workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { ResolvedEnvironment } from '../activities/resolve-environment.js';
import {
  ACTIVITY_ACTIONS, NON_RETRYABLE_CODES, RUN_CANCELLED, isErrorCode, type ErrorCode, type RunPhase,
} from '../contracts/constants.js';
import type {
  CompleteRun, Driver, EnvironmentLease, RunFailure, RunOutcome, RunRequestInput, RunResult, RunState,
  WorkspaceRealizationRecord,
} from '../contracts/index.js';
import {
  SEARCH_ATTRIBUTES, completeUpdate, getRunQuery, releaseSlotSignal, renewUpdate, retryRealizationSignal, retryRealizationUpdate,
  slotGrantedSignal, waitReadyUpdate,
} from '../contracts/messages.js';

const nonRetryableErrorTypes = [...NON_RETRYABLE_CODES];

// envrun's own metrics, exported with Temporal's runtime metrics (Prometheus on the worker). Made inside
// the workflow: the meter exists only in workflow context.
function runMetrics() {
  return {
    phaseCounter: metricMeter.createCounter('envrun_run_phase_entered', 'runs', 'runs entering each phase'),
    errorCounter: metricMeter.createCounter('envrun_run_errors', 'runs', 'runs failing, by error code'),
    readyHistogram: metricMeter.createHistogram('envrun_requested_to_ready', 'int', 'ms', 'time from start to ready'),
    realizationHistogram: metricMeter.createHistogram('envrun_realization', 'int', 'ms', 'time to realize the workspace'),
  };
}

function options(o: { timeout: string; attempts: number; initial?: string } & Partial<ActivityOptions>): ActivityOptions {
  const { timeout, attempts, initial, ...rest } = o;
  return {
    startToCloseTimeout: timeout,
    // attempts 0: no attempt limit (the timeouts bound it).
    retry: { ...(attempts ? { maximumAttempts: attempts } : {}), initialInterval: initial ?? '200ms', backoffCoefficient: 2, maximumInterval: '20s', nonRetryableErrorTypes },
    ...rest,
  };
}

// Each step has its own retry policy (the reference had none: one flaky call failed the run).
const remote = {
  resolveEnvironment: proxyActivities<Activities>({ ...options({ timeout: '30s', attempts: 5 }), summary: 'resolve environment' }).resolveEnvironment,
  persistMetadata: proxyActivities<Activities>({ ...options({ timeout: '30s', attempts: 10 }), summary: 'persist realization metadata' }).persistMetadata,
  logActivity: proxyActivities<Activities>({ ...options({ timeout: '30s', attempts: 10 }), summary: 'log activity' }).logActivity,
  renewLease: proxyActivities<Activities>({ ...options({ timeout: '30s', attempts: 10 }), summary: 'renew lease' }).renewLease,
};
// The short database steps run as local activities: in the worker that holds the workflow task, recorded
// as markers, with no task queue round trip. A retry of any of them is harmless (reads, idempotent upserts,
// event-keyed log rows). They retry through a database outage for minutes, not a fixed few attempts, and a
// cancelled run waits for one in flight to finish before it releases.
function local(summary: string, window: string) {
  return proxyLocalActivities<Activities>({
    startToCloseTimeout: '30s',
    scheduleToCloseTimeout: window,
    localRetryThreshold: '5s',
    retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '10s', nonRetryableErrorTypes },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary,
  });
}
const fast = {
  resolveEnvironment: local('resolve environment', '5m').resolveEnvironment,
  /** Only for drivers whose target is a check on this host (ResolvedEnvironment.localTarget). */
  resolveTarget: proxyLocalActivities<Activities>({
    startToCloseTimeout: '1m',
    retry: { maximumAttempts: 3, initialInterval: '500ms', backoffCoefficient: 2, nonRetryableErrorTypes },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary: 'resolve execution target',
  }).resolveTarget,
  persistMetadata: local('persist realization metadata', '10m').persistMetadata,
  logActivity: local('log activity', '10m').logActivity,
  renewLease: local('renew lease', '2m').renewLease,
};
const { acquireLease } = proxyActivities<Activities>({
  ...options({ timeout: '2m', attempts: 5, initial: '500ms' }),
  // Wait for a cancelled acquire to really stop, so release never races a resource still being made.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  summary: 'acquire lease',
});
const { realizeWorkspace } = proxyActivities<Activities>({
  ...options({ timeout: '2h', attempts: 3, initial: '1s' }),
  heartbeatTimeout: '20s',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  summary: 'realize workspace',
});
const { resolveTarget } = proxyActivities<Activities>({
  ...options({ timeout: '1m', attempts: 3, initial: '500ms' }),
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  summary: 'resolve execution target',
});
const { requestSlot } = proxyActivities<Activities>({ ...options({ timeout: '30s', attempts: 10 }), summary: 'join capacity queue' });
const RELEASE_ATTEMPTS = 5;
// Release retries a database outage for up to half an hour; a provider that still fails on attempt
// RELEASE_ATTEMPTS is recorded (cleanupStatus: failed) and the reaper tries it again later.
const { releaseLease } = proxyActivities<Activities>({
  ...options({ timeout: '5m', attempts: 0, initial: '500ms' }),
  scheduleToCloseTimeout: '30m',
  summary: 'release lease',
});

interface Context {
  environmentId: string | null;
  driver: Driver | null;
  provider: string | null;
}

/** Turns whatever a step threw into the run's failure, keeping the code the activity chose. */
function toRunFailure(err: unknown, step: ErrorCode, context: Context): RunFailure {
  const cause = err instanceof ActivityFailure && err.cause ? err.cause : err;
  if (cause instanceof ApplicationFailure) {
    const details = cause.details?.[0] as Partial<RunFailure> | undefined;
    const code = isErrorCode(details?.code) ? details.code : isErrorCode(cause.type) ? cause.type : step;
    return {
      code,
      message: details?.message ?? cause.message,
      environmentId: details?.environmentId ?? context.environmentId,
      driver: details?.driver ?? context.driver,
      provider: details?.provider ?? context.provider,
    };
  }
  const message = cause instanceof Error ? cause.message : String(cause);
  return { code: step, message, ...context };
}

function failureOf(error: RunFailure): ApplicationFailure {
  return ApplicationFailure.create({ type: error.code, message: error.message, details: [error], nonRetryable: true });
}

export async function environmentRun(input: RunRequestInput): Promise<RunOutcome> {
  const info = workflowInfo();
  const { phaseCounter, errorCounter, readyHistogram, realizationHistogram } = runMetrics();
  const now = () => new Date().toISOString();
  const state: RunState = {
    workflowId: info.workflowId,
    companyId: input.companyId,
    heartbeatRunId: input.heartbeatRunId,
    phase: 'resolving',
    environmentId: null,
    driver: null,
    provider: null,
    leaseId: null,
    result: null,
    error: null,
    completion: null,
    releasedLeases: [],
    operatorRetries: 0,
    lastError: null,
    expiresAt: null,
    timestamps: { requested: new Date(info.startTime).toISOString(), leased: null, realized: null, ready: null, released: null },
  };
  let cancelled = false;
  let releaseDone = false;
  let retryRequested = false;
  let renewals = 0;
  const context = (): Context => ({ environmentId: state.environmentId, driver: state.driver, provider: state.provider });

  const setPhase = (phase: RunPhase) => {
    state.phase = phase;
    phaseCounter.add(1, { phase });
    upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.phase, value: phase }]);
    setCurrentDetails(describe(state));
  };

  setHandler(getRunQuery, () => state);
  const granted = new Set<string>();
  const joinedGates: string[] = [];
  setHandler(slotGrantedSignal, (gateId: string) => {
    granted.add(gateId);
  });
  setHandler(waitReadyUpdate, async () => {
    await condition(() => state.result !== null || state.error !== null || cancelled);
    if (state.result) return state.result;
    if (state.error) throw failureOf(state.error);
    throw ApplicationFailure.create({ type: RUN_CANCELLED, message: 'the run was cancelled before it was ready', nonRetryable: true });
  });
  const requestRetry = () => {
    if (state.phase === 'awaiting_retry') retryRequested = true;
  };
  setHandler(retryRealizationSignal, requestRetry);
  setHandler(
    retryRealizationUpdate,
    async () => {
      requestRetry();
      await condition(() => state.phase !== 'awaiting_retry');
      return state;
    },
    { validator: () => {
      if (state.phase !== 'awaiting_retry') throw new Error(`the run is ${state.phase}, not awaiting_retry`);
    } },
  );
  setHandler(
    renewUpdate,
    async () => {
      const renewed = await renewLease({ leaseId: state.leaseId!, companyId: state.companyId, ttlMs: ttlMs });
      state.expiresAt = renewed.expiresAt;
      renewals++;
      setCurrentDetails(describe(state));
      return state;
    },
    { validator: () => {
      if (state.phase !== 'ready') throw new Error(`the run is ${state.phase}, not ready`);
    } },
  );
  setHandler(
    completeUpdate,
    async (completion: CompleteRun) => {
      state.completion = { status: completion.status, failureReason: completion.failureReason ?? null };
      await condition(() => releaseDone);
      return state;
    },
    {
      validator: (completion: CompleteRun) => {
        if (!completion || (completion.status !== 'succeeded' && completion.status !== 'failed')) {
          throw new Error('status: must be "succeeded" or "failed"');
        }
        if (state.completion) throw new Error('the run was already completed');
        if (state.phase !== 'ready') throw new Error(`the run is ${state.phase}, not ready`);
      },
    },
  );

  // Runs started before operator retry and lease TTLs existed replay (and finish) as they began; so do
  // runs started before the short steps became local activities.
  const opsFeatures = patched('envrun-ops-retry-ttl');
  const { resolveEnvironment, persistMetadata, logActivity, renewLease } = patched('envrun-local-steps') ? fast : remote;
  const ttlMs = typeof input.leaseTtlMs === 'number' ? input.leaseTtlMs : 3600_000;
  let expired = false;
  let leaseAttempted = false;
  let cancellation: unknown = null;
  let step: ErrorCode = 'invalid_request';
  let resolved: ResolvedEnvironment | null = null;
  try {
    step = 'environment_not_found';
    resolved = await resolveEnvironment(input);
    const { request, environment, executionWorkspace } = resolved;
    state.environmentId = environment.id;
    state.driver = environment.driver;
    state.provider = providerOf(environment.driver, environment.config);
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.environmentId, value: environment.id },
      { key: SEARCH_ATTRIBUTES.driver, value: environment.driver },
      ...(state.provider ? [{ key: SEARCH_ATTRIBUTES.provider, value: state.provider }] : []),
    ]);

    // Capacity: single flight in wait mode (per execution workspace), then admission control (per
    // environment). Each is a gate workflow that admits runs in arrival order.
    const config = environment.config as { maxConcurrentLeases?: number; singleFlight?: string; leasePolicy?: string };
    const gates: { id: string; capacity: number }[] = [];
    const policy = request.leasePolicy ?? config.leasePolicy ?? 'ephemeral';
    if (request.executionWorkspaceId && config.singleFlight === 'wait' && policy === 'ephemeral') {
      gates.push({ id: `envrun-gate/workspace/${request.executionWorkspaceId}`, capacity: 1 });
    }
    if (typeof config.maxConcurrentLeases === 'number') {
      gates.push({ id: `envrun-gate/environment/${environment.id}`, capacity: config.maxConcurrentLeases });
    }
    for (const gate of gates) {
      setPhase('waiting_for_capacity');
      joinedGates.push(gate.id);
      await requestSlot({ gateId: gate.id, capacity: gate.capacity, runWorkflowId: info.workflowId, taskQueue: info.taskQueue });
      await condition(() => granted.has(gate.id));
    }

    setPhase('leasing');
    step = 'lease_acquire_failed';
    leaseAttempted = true;
    let lease: EnvironmentLease = await acquireLease({ request, environment });
    state.leaseId = lease.id;
    state.provider = lease.provider ?? state.provider;
    state.timestamps.leased = now();
    await logActivity({
      eventKey: `${info.workflowId}:${ACTIVITY_ACTIONS.leaseAcquired}:${lease.id}`,
      companyId: request.companyId, action: ACTIVITY_ACTIONS.leaseAcquired, entityType: 'environment_lease',
      entityId: lease.id, agentId: request.agentId, runId: request.heartbeatRunId,
      details: {
        environmentId: environment.id, driver: environment.driver, leasePolicy: lease.leasePolicy,
        provider: lease.provider, executionWorkspaceId: request.executionWorkspaceId, issueId: request.issueId,
      },
    });

    let record: WorkspaceRealizationRecord | null = null;
    let persistedExecutionWorkspace = executionWorkspace;
    if (environment.driver !== 'plugin') {
      setPhase('realizing');
      step = 'workspace_realization_failed';
      const realizeStarted = Date.now();
      let realized: Awaited<ReturnType<typeof realizeWorkspace>>;
      // When the retry policy is spent, wait for an operator (retryRealization) until the deadline.
      for (;;) {
        try {
          realized = await realizeWorkspace({ request, environment, lease, executionWorkspace });
          break;
        } catch (err) {
          if (isCancellation(err) || !opsFeatures || request.awaitRetryMs === 0) throw err;
          state.lastError = toRunFailure(err, 'workspace_realization_failed', context());
          upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.errorCode, value: state.lastError.code }]);
          setPhase('awaiting_retry');
          retryRequested = false;
          if (!(await condition(() => retryRequested, request.awaitRetryMs))) throw err;
          state.operatorRetries++;
          upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.errorCode, value: null }]);
          setPhase('realizing');
        }
      }
      state.lastError = null;
      realizationHistogram.record(Date.now() - realizeStarted, { driver: environment.driver, provider: state.provider ?? 'none' });
      record = realized.record;
      state.timestamps.realized = now();

      setPhase('persisting');
      const stored = await persistMetadata({
        environment, lease, executionWorkspaceId: request.executionWorkspaceId,
        realizationRequest: realized.realizationRequest, record, leaseTtlMs: ttlMs,
      });
      lease = stored.lease;
      persistedExecutionWorkspace = stored.persistedExecutionWorkspace;
    }

    setPhase('resolving_target');
    step = 'transport_resolution_failed';
    // Runs started before local target resolution existed replay as they began.
    const localTarget = patched('envrun-local-target') && resolved.localTarget === true;
    const target = await (localTarget ? fast.resolveTarget : resolveTarget)({ environment, lease, record });
    if (record) {
      await logActivity({
        eventKey: `${info.workflowId}:${ACTIVITY_ACTIONS.workspaceRealized}:${lease.id}`,
        companyId: request.companyId, action: ACTIVITY_ACTIONS.workspaceRealized, entityType: 'environment_lease',
        entityId: lease.id, agentId: request.agentId, runId: request.heartbeatRunId,
        details: { environmentId: environment.id, driver: environment.driver, summary: record.summary, transport: record.transport },
      });
    }
    const result: RunResult = {
      lease,
      executionTarget: target.executionTarget,
      remoteExecution: target.remoteExecution,
      workspaceRealization: record ?? {},
      persistedExecutionWorkspace,
    };
    state.result = result;
    state.expiresAt = lease.expiresAt;
    state.timestamps.ready = now();
    setPhase('ready');
    const requestedToReadyMs = Date.now() - info.startTime.getTime();
    readyHistogram.record(requestedToReadyMs, { driver: environment.driver, provider: state.provider ?? 'none' });
    if (opsFeatures) upsertMemo({ requestedToReadyMs, driver: environment.driver, provider: state.provider ?? 'none' });

    // Held until completed; a control plane that stops renewing loses the lease at its expiry.
    if (!opsFeatures) await condition(() => state.completion !== null);
    while (opsFeatures) {
      const remaining = state.expiresAt ? Date.parse(state.expiresAt) - Date.now() : ttlMs;
      if (remaining <= 0) {
        expired = true;
        break;
      }
      const seen = renewals;
      await condition(() => state.completion !== null || renewals !== seen, remaining);
      if (state.completion) break;
    }
  } catch (err) {
    if (isCancellation(err) || CancellationScope.current().consideredCancelled) {
      cancelled = true;
      cancellation = isCancellation(err) ? err : new CancelledFailure('run cancelled');
    } else {
      state.error = toRunFailure(err, step, context());
      upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.errorCode, value: state.error.code }]);
    }
  }

  // Undo, newest first, whatever happened above, and even when the workflow is cancelled.
  if (leaseAttempted) {
    await CancellationScope.nonCancellable(async () => {
      setPhase('releasing');
      const outcome = cancelled ? 'cancelled' : state.error ? 'failed' : expired ? 'expired' : state.completion!.status;
      const failureReason = cancelled ? 'run cancelled' : state.error ? `${state.error.code}: ${state.error.message}`
        : expired ? `not renewed within ${ttlMs} ms` : state.completion?.failureReason ?? null;
      try {
        const released = await releaseLease({
          companyId: input.companyId, heartbeatRunId: input.heartbeatRunId, leaseId: state.leaseId,
          outcome, failureReason, finalAttempt: RELEASE_ATTEMPTS,
        });
        state.releasedLeases = released.leases;
        const action = expired ? ACTIVITY_ACTIONS.leaseExpired : ACTIVITY_ACTIONS.leaseReleased;
        for (const lease of released.leases) {
          await logActivity({
            eventKey: `${info.workflowId}:${action}:${lease.id}`,
            companyId: input.companyId, action, entityType: 'environment_lease',
            entityId: lease.id, agentId: input.agentId ?? null, runId: input.heartbeatRunId,
            details: {
              environmentId: lease.environmentId, status: lease.status, cleanupStatus: lease.cleanupStatus,
              failureReason: lease.failureReason, outcome,
            },
          });
        }
        const firstCleanupFailure = released.cleanupFailures[0];
        if (firstCleanupFailure && !state.error) {
          state.error = { code: 'lease_cleanup_failed', message: `lease ${firstCleanupFailure.leaseId}: ${firstCleanupFailure.message}`, ...context() };
        }
      } catch (err) {
        // The run's own error stays the headline; a release error is reported when there is none.
        if (!state.error) state.error = toRunFailure(err, 'lease_release_failed', context());
      }
      if (state.error) upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.errorCode, value: state.error.code }]);
      state.timestamps.released = now();
    });
  }
  // Give back capacity slots (or leave their queues), newest first.
  if (joinedGates.length) {
    await CancellationScope.nonCancellable(async () => {
      for (const gateId of [...joinedGates].reverse()) {
        await getExternalWorkflowHandle(gateId).signal(releaseSlotSignal, info.workflowId).catch(() => undefined);
      }
    });
  }
  releaseDone = true;
  if (state.error) errorCounter.add(1, { code: state.error.code });
  setPhase(cancelled ? 'cancelled' : state.error ? 'failed' : 'released');
  // Let update handlers (complete) return; a cancel that arrives after completion does not undo it.
  await CancellationScope.nonCancellable(() => condition(allHandlersFinished));
  if (cancelled) throw cancellation;
  if (state.error) throw failureOf(state.error);
  return { status: expired ? 'expired' : state.completion!.status, releasedLeases: state.releasedLeases };
}

function providerOf(driver: Driver, config: Record<string, unknown>): string | null {
  if (driver === 'local') return 'local';
  if (driver === 'sandbox' && typeof config.provider === 'string') return config.provider;
  if (driver === 'plugin' && typeof config.pluginKey === 'string') return config.pluginKey;
  return null;
}

/** The run as ops see it in the Temporal UI ("current details", markdown). */
function describe(state: RunState): string {
  const lines = [
    `**phase:** ${state.phase}`,
    `**environment:** ${state.environmentId ?? '—'} (${state.driver ?? '?'}${state.provider ? `/${state.provider}` : ''})`,
    `**lease:** ${state.leaseId ?? '—'}`,
  ];
  const target = state.result?.executionTarget;
  if (target) lines.push(`**target:** ${target.kind === 'local' ? `local ${target.cwd}` : `${target.transport} ${target.remoteCwd}`}`);
  if (state.expiresAt) lines.push(`**lease expires:** ${state.expiresAt}`);
  if (state.operatorRetries) lines.push(`**operator retries:** ${state.operatorRetries}`);
  const error = state.error ?? state.lastError;
  if (error) lines.push(`**${state.error ? 'error' : 'last error'}:** \`${error.code}\` ${error.message}`);
  if (state.phase === 'awaiting_retry') lines.push('Send the `retryRealization` signal (or `envrun run retry`) after fixing the cause.');
  return lines.join('\n\n');
}
