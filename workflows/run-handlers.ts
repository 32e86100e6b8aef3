// The run's query, signals and updates, and the end of its commands (exec updates) before release.
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  condition,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  uuid4,
} from '@temporalio/workflow';
import type {
  CommandOutcome,
  CompleteRun,
  DriverRealization,
  EnvironmentLease,
  ExecRequest,
  RealizeRequest,
} from '../contracts/index.js';
import {
  completeUpdate,
  execUpdate,
  getCommandsQuery,
  getRunQuery,
  hostLostSignal,
  realizeUpdate,
  releaseRequestSignal,
  renewUpdate,
  retryRealizationSignal,
  retryRealizationUpdate,
  slotGrantedSignal,
  waitLeasedUpdate,
  waitReadyUpdate,
} from '../contracts/messages.js';
import { COMMAND_ID_PATTERN, COMMAND_ID_RULE, PROVIDER_RESOURCE_DISPOSITIONS } from '../contracts/constants.js';
import { releaseRequestOf } from '../contracts/lease-policy.js';
import { HostLostError, applicationFailure, cancelledBefore, onHost } from './run-failure.js';
import { dbSteps } from './activity-options.js';
import { describe, type Run, type RunCommand } from './run-state.js';

export interface HandlerDeps {
  /** Pushes the held lease's expiry out by the run's TTL. */
  renewLease(): Promise<Pick<EnvironmentLease, 'expiresAt'>>;
}

/**
 * The run's query, signals and updates. Installed at the start of the workflow, before anything else
 * happens: a waitReady update sent with the start is accepted as its handler is set.
 */
export function installHandlers(run: Run, deps: HandlerDeps): void {
  const { state } = run;
  setHandler(getRunQuery, () => state);
  setHandler(slotGrantedSignal, (gateId: string) => {
    run.granted.add(gateId);
  });
  // Sent just before a cancel: how its release treats the resource. A completion's own request wins.
  setHandler(releaseRequestSignal, (request) => {
    if (!state.completion) run.releaseRequest = releaseRequestOf(request);
  });
  setHandler(hostLostSignal, (hostId: string) => {
    // A run still on its way to ready finds out through its own steps, and is placed again.
    if (hostId === run.hostId && state.phase === 'ready') run.hostLost = true;
  });
  setHandler(waitReadyUpdate, async () => {
    await condition(() => state.result !== null || state.error !== null || run.cancelled);
    if (state.result) return state.result;
    throw state.error ? applicationFailure(state.error) : cancelledBefore('ready');
  });
  setHandler(waitLeasedUpdate, async () => {
    await condition(() => run.leasedRun !== null || state.error !== null || run.cancelled);
    if (run.leasedRun) return run.leasedRun;
    throw state.error ? applicationFailure(state.error) : cancelledBefore('leased');
  });
  setHandler(
    realizeUpdate,
    async (request: RealizeRequest) => {
      run.realizeRequest = request;
      await condition(() => state.result !== null || state.error !== null || run.cancelled);
      if (state.result) return state.result;
      throw state.error ? applicationFailure(state.error) : cancelledBefore('ready');
    },
    {
      validator: (request: RealizeRequest) => {
        if (!request?.workspace) throw new Error('workspace: required');
        if (state.phase !== 'awaiting_realize' || run.realizeRequest) {
          throw new Error(`the run is ${state.phase}, not awaiting_realize`);
        }
      },
    },
  );
  setHandler(getCommandsQuery, () => [...run.commandTable.values()].map((c) => c.summary));
  setHandler(
    execUpdate,
    async (request: ExecRequest) => {
      // Runs from before durable commands keep their exec as it was: one update, one step, its output.
      if (!patched(DURABLE_COMMANDS)) return execBeforeJournal(run, request);
      const commandId = request.commandId ?? uuid4();
      const command = run.commandTable.get(commandId) ?? startCommand(run, commandId, request);
      if (request.wait === false && command.summary.status === 'running') {
        return { ...command.summary, stdout: '', stderr: '', outputLossy: false };
      }
      await command.done;
      if (command.failure) throw command.failure;
      return command.outcome ?? { ...command.summary, stdout: '', stderr: '', outputLossy: false };
    },
    {
      validator: (request: ExecRequest) => {
        if (!request?.command) throw new Error('command: required');
        if (request.commandId !== undefined && !COMMAND_ID_PATTERN.test(request.commandId)) {
          throw new Error(`commandId: ${COMMAND_ID_RULE}`);
        }
        if (state.phase !== 'ready' || !state.result || state.completion) {
          throw new Error(`the run is ${state.phase}, not ready`);
        }
      },
    },
  );
  const requestRetry = () => {
    if (state.phase === 'awaiting_retry') run.retryRequested = true;
  };
  setHandler(retryRealizationSignal, requestRetry);
  setHandler(
    retryRealizationUpdate,
    async () => {
      requestRetry();
      await condition(() => state.phase !== 'awaiting_retry');
      return state;
    },
    {
      validator: () => {
        if (state.phase !== 'awaiting_retry') throw new Error(`the run is ${state.phase}, not awaiting_retry`);
      },
    },
  );
  setHandler(
    renewUpdate,
    async () => {
      const renewed = await deps.renewLease();
      state.expiresAt = renewed.expiresAt;
      run.renewals++;
      setCurrentDetails(describe(state, run.commandTable));
      return state;
    },
    {
      validator: () => {
        if (state.phase !== 'ready') throw new Error(`the run is ${state.phase}, not ready`);
        // A completed run is about to release; an expired lease is already lost: neither is renewed.
        if (state.completion) throw new Error('the run was completed; its lease is being released');
        if (state.expiresAt && Date.parse(state.expiresAt) <= Date.now()) {
          throw new Error(`the lease expired at ${state.expiresAt}`);
        }
      },
    },
  );
  setHandler(
    completeUpdate,
    async (completion: CompleteRun) => {
      state.completion = { status: completion.status, failureReason: completion.failureReason ?? null };
      run.releaseRequest = releaseRequestOf(completion);
      await condition(() => run.releaseDone);
      // The run after release; its ready result is left out (the lease it names is released, and the run's
      // history need not hold it a third time). getRun still shows it.
      return { ...state, result: null };
    },
    {
      validator: (completion: CompleteRun) => {
        if (!completion || (completion.status !== 'succeeded' && completion.status !== 'failed')) {
          throw new Error('status: must be "succeeded" or "failed"');
        }
        const { cancelActiveWork, providerResourceDisposition } = completion;
        if (cancelActiveWork !== undefined && typeof cancelActiveWork !== 'boolean') {
          throw new Error('cancelActiveWork: must be a boolean');
        }
        if (
          providerResourceDisposition !== undefined &&
          !(PROVIDER_RESOURCE_DISPOSITIONS as readonly string[]).includes(providerResourceDisposition)
        ) {
          throw new Error(`providerResourceDisposition: must be one of ${PROVIDER_RESOURCE_DISPOSITIONS.join(', ')}`);
        }
        if (state.completion) throw new Error('the run was already completed');
        if (state.phase !== 'ready' && state.phase !== 'awaiting_realize') {
          throw new Error(`the run is ${state.phase}, not ready`);
        }
      },
    },
  );
}

/**
 * The patch under which release ends the run's commands first: each exec step runs in a scope of its own,
 * and release cancels them and waits for them (their sandboxes are killed) before it frees anything.
 */
export const RELEASE_ENDS_COMMANDS = 'release-ends-commands';
/** The error type of a command ended by release. */
export const COMMAND_ENDED = 'command_ended';
/**
 * How long release waits for cancelled commands. A worker that died with them is noticed by the steps'
 * heartbeat timeout (30 s); the provider's release kills whatever still runs in any case.
 */
const COMMANDS_END_WITHIN_MS = 60_000;

/**
 * Ends the run's commands still in flight (release never races them): their steps are cancelled, which
 * kills their sandboxes, and waited for. A run with none writes nothing to its history.
 */
export async function endCommands(run: Run): Promise<void> {
  if (run.commands.size === 0) return;
  run.endingCommands = true;
  for (const scope of run.commands) scope.cancel();
  await condition(() => run.commands.size === 0, COMMANDS_END_WITHIN_MS);
}

/** The patch under which commands are journaled: an id each, the output in the store, summaries in history. */
export const DURABLE_COMMANDS = 'durable-commands';

function stepInput(run: Run, request: ExecRequest) {
  const result = run.state.result!;
  const record = 'version' in result.workspaceRealization ? (result.workspaceRealization as DriverRealization) : null;
  return { companyId: run.state.companyId, lease: result.lease, record, request };
}

/** Exec as it was before durable commands (runs whose history has no `durable-commands` patch). */
async function execBeforeJournal(run: Run, request: ExecRequest): Promise<CommandOutcome> {
  const input = stepInput(run, request);
  // Runs from before the patch keep a command that release neither ends nor waits for.
  const endedByRelease = patched(RELEASE_ENDS_COMMANDS);
  const scope = new CancellationScope();
  if (endedByRelease) run.commands.add(scope);
  try {
    return endedByRelease
      ? await scope.run(() => onHost(run, (steps) => steps.execCommand(input)))
      : await onHost(run, (steps) => steps.execCommandV1(input));
  } catch (err) {
    throw commandFailure(run, err);
  } finally {
    run.commands.delete(scope);
  }
}

/** What the caller of a command that did not end on its own is told. */
function commandFailure(run: Run, err: unknown): unknown {
  if (run.endingCommands && isCancellation(err)) {
    return ApplicationFailure.create({
      type: COMMAND_ENDED,
      message: 'the command was ended: the run is releasing its lease',
      nonRetryable: true,
    });
  }
  if (!(err instanceof HostLostError)) return err;
  run.hostLost = true;
  return applicationFailure(run.failureOf('environment_host_lost', err.message));
}

/**
 * Starts command `commandId`: its step runs on the lease's host, in a scope release can cancel. The run
 * keeps its summary (never its output). A step that fails without saying how the command ended (its worker
 * died, its host was lost) leaves the command `lost` in the store; one ended by release, `killed_by_release`.
 */
function startCommand(run: Run, commandId: string, request: ExecRequest): RunCommand {
  const tailBytes = request.wait === false ? 0 : request.tailBytes;
  const input = stepInput(run, { ...request, commandId, ...(tailBytes === undefined ? {} : { tailBytes }) });
  const command: RunCommand = {
    summary: {
      commandId,
      status: 'running',
      exitCode: null,
      signal: null,
      timedOut: false,
      startedAt: new Date().toISOString(),
      endedAt: null,
      durationMs: null,
      stdoutBytes: 0,
      stderrBytes: 0,
      truncated: false,
      error: null,
    },
    outcome: null,
    failure: null,
    done: Promise.resolve(),
  };
  run.commandTable.set(commandId, command);
  run.showCommands();
  const scope = new CancellationScope();
  run.commands.add(scope);
  command.done = scope
    .run(() => onHost(run, (steps) => steps.execCommand(input)))
    .then(
      (outcome) => {
        command.outcome = outcome;
        const { stdout: _o, stderr: _e, outputLossy: _l, ...summary } = outcome;
        command.summary = summary;
      },
      async (err) => {
        const ended = run.endingCommands && isCancellation(err);
        const status = ended ? 'killed_by_release' : err instanceof ActivityFailure && isTimeout(err) ? 'lost' : null;
        // A lost command is an answer, not an error: its callers are told `lost`, and why.
        command.failure = status === 'lost' ? null : commandFailure(run, err);
        const message = ended
          ? 'the run released its lease'
          : status === 'lost'
            ? 'the worker running the command stopped answering: its end is unknown; it is not run again'
            : (rootMessage(err) ?? 'the command failed');
        const settled = await CancellationScope.nonCancellable(() =>
          dbSteps.settleCommand({
            companyId: run.state.companyId,
            heartbeatRunId: run.state.heartbeatRunId,
            commandId,
            status: status ?? (err instanceof HostLostError ? 'lost' : 'failed'),
            error: message,
          }),
        );
        command.summary = settled ?? { ...command.summary, status: status ?? 'failed', error: message };
      },
    )
    .finally(() => {
      run.commands.delete(scope);
      run.showCommands();
    });
  return command;
}

function isTimeout(err: ActivityFailure): boolean {
  return err.cause instanceof TimeoutFailure;
}

function rootMessage(err: unknown): string | null {
  let e = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : null;
}
