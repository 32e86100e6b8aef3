// A run's state as the workflow keeps it and the world sees it: the state object (query getRun), the phase
// with its search attributes and UI details, and envrun's metrics. The message handlers are in
// run-handlers.ts, the step failures in run-failure.ts.
import {
  metricMeter,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
  type CancellationScope,
} from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { DEFAULT_HOST_PICKUP_MS, hostTaskQueue, type ErrorCode, type RunPhase } from '../contracts/constants.js';
import type { FailureContext } from '../contracts/errors.js';
import type {
  CommandOutcome,
  CommandSummary,
  Driver,
  Environment,
  EnvironmentLease,
  RealizeRequest,
  ReleaseRequest,
  RunFailure,
  RunRequestInput,
  RunResult,
  RunState,
} from '../contracts/index.js';
import { SEARCH_ATTRIBUTES, type LeasedRun } from '../contracts/messages.js';
import { providerOf } from '../contracts/lease-policy.js';
import { hostSteps } from './activity-options.js';
import { toRunFailure } from './run-failure.js';

// envrun's own metrics, exported with Temporal's runtime metrics (Prometheus on the worker). Made inside
// the workflow: the meter exists only in workflow context.
function runMetrics() {
  return {
    phaseCounter: metricMeter.createCounter('envrun_run_phase_entered', 'runs', 'runs entering each phase'),
    errorCounter: metricMeter.createCounter('envrun_run_errors', 'runs', 'runs failing, by error code'),
    readyHistogram: metricMeter.createHistogram('envrun_requested_to_ready', 'int', 'ms', 'time from start to ready'),
    realizationHistogram: metricMeter.createHistogram(
      'envrun_realization',
      'int',
      'ms',
      'time to realize the workspace',
    ),
  };
}

function initialState(input: RunRequestInput): RunState {
  const info = workflowInfo();
  return {
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
    lostLeases: [],
    operatorRetries: 0,
    lastError: null,
    expiresAt: null,
    timestamps: {
      requested: new Date(info.startTime).toISOString(),
      leased: null,
      realized: null,
      ready: null,
      released: null,
    },
  };
}

/** What a held run carries into its next run when it continues as new. */
export interface ContinuedRun {
  state: RunState;
  leasedRun: LeasedRun;
  joinedGates: string[];
  renewals: number;
  /** How the release treats the resource, when the control plane said so before the chain went on. */
  releaseRequest?: ReleaseRequest;
}

/** The workflow's argument: a run request, or (after continue-as-new) the same request with what it held. */
export type RunInput = RunRequestInput & { continued?: ContinuedRun };

/** The run's state and the helpers that change it; made once, at the start of the workflow. */
export function createRunState(input: RunInput) {
  const info = workflowInfo();
  const metrics = runMetrics();
  const state = input.continued ? { ...input.continued.state, workflowId: info.workflowId } : initialState(input);
  const context = (): FailureContext => ({
    environmentId: state.environmentId,
    driver: state.driver,
    provider: state.provider,
  });
  const now = () => new Date().toISOString();
  const providerLabel = () => state.provider ?? 'none';
  const pickupMs = input.hostPickupMs ?? DEFAULT_HOST_PICKUP_MS;
  // Search attributes waiting for the next phase change: at most four upserts on a run's way to released.
  let pending: SearchAttributeUpdatePair[] = [];

  const run = {
    state,
    /** The run was cancelled: waitReady stops waiting. */
    cancelled: false,
    /** Release and the gates' slots are done: complete returns. */
    releaseDone: false,
    /** An operator asked for another realization while the run was awaiting retry. */
    retryRequested: false,
    /** Renewals so far: the hold loop waits for a change, then recomputes the expiry. */
    renewals: 0,
    /** Capacity gates that admitted this run. */
    granted: new Set<string>(),
    /** Capacity gates this run joined, in order: they get their slot (or queue place) back newest first. */
    joinedGates: [] as string[],
    /** The environment and lease, once leased (waitLeased answers with them). */
    leasedRun: null as LeasedRun | null,
    /** What a run that realizes on request was asked to realize. */
    realizeRequest: null as RealizeRequest | null,
    /** How the release treats the resource (its disposition, cancelActiveWork), as complete or a cancel said. */
    releaseRequest: null as ReleaseRequest | null,
    /** The steps on the lease's resource: on its host's queue once leased on a host-bound resource. */
    steps: hostSteps(null, pickupMs),
    /** The worker host that holds the lease's resource (null: a resource any worker reaches). */
    hostId: null as string | null,
    /** That host was found gone while the run was ready (by a step, or the reaper's signal). */
    hostLost: false,
    /** Commands (exec steps) in flight: release cancels them and waits for them first. */
    commands: new Set<CancellationScope>(),
    /** Release is ending the commands still in flight. */
    endingCommands: false,
    /** Every command the run started, by id, in start order: summaries only (the output is in the store). */
    commandTable: new Map<string, RunCommand>(),
    /** Whether a command (started with durable commands) still runs. */
    commandsRunning() {
      for (const c of run.commandTable.values()) if (c.summary.status === 'running') return true;
      return false;
    },
    /** Shows the commands' counts in the run's details (the Temporal UI). */
    showCommands() {
      setCurrentDetails(describe(state, run.commandTable));
    },

    /**
     * Enters a phase. `searchable: false` keeps a brief phase (releasing) out of the search attributes: it
     * shows in the query and the UI's details, and the next searchable phase replaces it.
     */
    setPhase(phase: RunPhase, { searchable = true }: { searchable?: boolean } = {}) {
      state.phase = phase;
      metrics.phaseCounter.add(1, { phase });
      if (searchable) {
        upsertSearchAttributes([...pending, { key: SEARCH_ATTRIBUTES.phase, value: phase }]);
        pending = [];
      }
      setCurrentDetails(describe(state, run.commandTable));
    },
    /** Shows the error code in the run's search attributes (null clears it). */
    showErrorCode(code: ErrorCode | null) {
      upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.errorCode, value: code }]);
    },
    /** The error code goes with the next phase change. */
    showErrorCodeNext(code: ErrorCode) {
      pending.push({ key: SEARCH_ATTRIBUTES.errorCode, value: code });
    },
    /** Turns whatever a step threw into a failure of this run. */
    failure(err: unknown, step: ErrorCode): RunFailure {
      return toRunFailure(err, step, context());
    },
    /** A failure the workflow found itself (no step threw it). */
    failureOf(code: ErrorCode, message: string): RunFailure {
      return { code, message, ...context() };
    },

    /** The environment is known: its id, driver and provider become searchable. */
    identify(environment: Pick<Environment, 'id' | 'driver' | 'config'>) {
      state.environmentId = environment.id;
      state.driver = environment.driver;
      state.provider = providerOf(environment.driver, environment.config);
      pending.push(
        { key: SEARCH_ATTRIBUTES.environmentId, value: environment.id },
        { key: SEARCH_ATTRIBUTES.driver, value: environment.driver },
        ...(state.provider ? [{ key: SEARCH_ATTRIBUTES.provider, value: state.provider }] : []),
      );
    },
    leased(environment: Environment, lease: EnvironmentLease) {
      run.leasedRun = { environment, lease };
      run.onHost(lease);
      state.leaseId = lease.id;
      state.provider = lease.provider ?? state.provider;
      state.timestamps.leased = now();
    },
    /** Routes the steps on the lease's resource to the host that holds it. */
    onHost(lease: EnvironmentLease) {
      const hostId = lease.metadata?.hostId;
      run.hostId = typeof hostId === 'string' ? hostId : null;
      run.steps = hostSteps(run.hostId ? hostTaskQueue(info.taskQueue, run.hostId) : null, pickupMs);
    },
    /** The lease was lost with its host; the run is placed again (a fresh lease) or fails. */
    lost(lease: EnvironmentLease | null) {
      if (lease) state.lostLeases = [...state.lostLeases, lease.id];
      state.leaseId = null;
      run.leasedRun = null;
      run.hostId = null;
    },
    realized(driver: Driver, tookMs: number) {
      state.lastError = null;
      metrics.realizationHistogram.record(tookMs, { driver, provider: providerLabel() });
      state.timestamps.realized = now();
    },
    /** The run is ready. */
    ready(result: RunResult, driver: Driver) {
      state.result = result;
      state.expiresAt = result.lease.expiresAt;
      state.timestamps.ready = now();
      const requestedToReadyMs = Date.now() - info.startTime.getTime();
      pending.push({ key: SEARCH_ATTRIBUTES.readyMs, value: requestedToReadyMs });
      run.setPhase('ready');
      metrics.readyHistogram.record(requestedToReadyMs, { driver, provider: providerLabel() });
    },
    released() {
      state.timestamps.released = now();
    },
    /** What the next run of the chain needs to go on holding the lease. */
    snapshot(): ContinuedRun {
      return {
        state,
        leasedRun: run.leasedRun!,
        joinedGates: run.joinedGates,
        renewals: run.renewals,
        ...(run.releaseRequest ? { releaseRequest: run.releaseRequest } : {}),
      };
    },
    /** Release and the gates are done: complete may return, and the run takes its final phase. */
    ended() {
      run.releaseDone = true;
      if (state.error) {
        metrics.errorCounter.add(1, { code: state.error.code });
        run.showErrorCodeNext(state.error.code);
      }
      run.setPhase(run.cancelled ? 'cancelled' : state.error ? 'failed' : 'released');
    },
  };
  if (input.continued) {
    run.leasedRun = input.continued.leasedRun;
    run.joinedGates = [...input.continued.joinedGates];
    for (const gate of run.joinedGates) run.granted.add(gate);
    run.renewals = input.continued.renewals;
    run.releaseRequest = input.continued.releaseRequest ?? null;
    run.onHost(run.leasedRun.lease);
  }
  return run;
}
export type Run = ReturnType<typeof createRunState>;

/** A command of the run: its summary as history knows it, and how it ended for its callers. */
export interface RunCommand {
  summary: CommandSummary;
  /** Its step's answer (summary and tail), once it ended on its own. */
  outcome: CommandOutcome | null;
  /** What its callers are told when it did not. */
  failure: unknown;
  /** Settles when the command's step has ended and its end is recorded. */
  done: Promise<void>;
}

/** The run as ops see it in the Temporal UI ("current details", markdown). */
export function describe(state: RunState, commands?: ReadonlyMap<string, RunCommand>): string {
  const driver = `${state.driver ?? '?'}${state.provider ? `/${state.provider}` : ''}`;
  const lines = [
    `**phase:** ${state.phase}`,
    `**environment:** ${state.environmentId ?? '—'} (${driver})`,
    `**lease:** ${state.leaseId ?? '—'}`,
  ];
  const target = state.result?.executionTarget;
  if (target) {
    const where = target.kind === 'local' ? `local ${target.cwd}` : `${target.transport} ${target.remoteCwd}`;
    lines.push(`**target:** ${where}`);
  }
  if (state.expiresAt) lines.push(`**lease expires:** ${state.expiresAt}`);
  if (state.operatorRetries) lines.push(`**operator retries:** ${state.operatorRetries}`);
  const error = state.error ?? state.lastError;
  if (error) lines.push(`**${state.error ? 'error' : 'last error'}:** \`${error.code}\` ${error.message}`);
  if (commands?.size) {
    const running = [...commands.values()].filter((c) => c.summary.status === 'running').length;
    const last = [...commands.values()].at(-1)!.summary;
    lines.push(
      `**commands:** ${running} running, ${commands.size} in all; latest \`${last.commandId}\` ${last.status}` +
        (last.exitCode !== null ? ` (exit ${last.exitCode})` : last.signal ? ` (${last.signal})` : '') +
        ' (`envrun run commands`, the `getCommands` query)',
    );
  }
  if (state.phase === 'awaiting_retry') {
    lines.push('Send the `retryRealization` signal (or `envrun run retry`) after fixing the cause.');
  }
  return lines.join('\n\n');
}
