// The run's query, signals and updates, and the end of its commands (exec updates) before release.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
} from '@temporalio/workflow';
import type {
  CompleteRun,
  DriverRealization,
  EnvironmentLease,
  ExecRequest,
  RealizeRequest,
} from '../contracts/index.js';
import {
  completeUpdate,
  execUpdate,
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
import { PROVIDER_RESOURCE_DISPOSITIONS } from '../contracts/constants.js';
import { releaseRequestOf } from '../contracts/lease-policy.js';
import { HostLostError, applicationFailure, cancelledBefore, onHost } from './run-failure.js';
import { describe, type Run } from './run-state.js';

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
  setHandler(
    execUpdate,
    async (request: ExecRequest) => {
      const result = state.result!;
      const record =
        'version' in result.workspaceRealization ? (result.workspaceRealization as DriverRealization) : null;
      const input = { companyId: state.companyId, lease: result.lease, record, request };
      // Runs from before the patch keep a command that release neither ends nor waits for.
      const endedByRelease = patched(RELEASE_ENDS_COMMANDS);
      const scope = new CancellationScope();
      if (endedByRelease) run.commands.add(scope);
      try {
        return endedByRelease
          ? await scope.run(() => onHost(run, (steps) => steps.execCommand(input)))
          : await onHost(run, (steps) => steps.execCommandV1(input));
      } catch (err) {
        if (run.endingCommands && isCancellation(err)) {
          throw ApplicationFailure.create({
            type: COMMAND_ENDED,
            message: 'the command was ended: the run is releasing its lease',
            nonRetryable: true,
          });
        }
        if (!(err instanceof HostLostError)) throw err;
        run.hostLost = true;
        throw applicationFailure(run.failureOf('environment_host_lost', err.message));
      } finally {
        run.commands.delete(scope);
      }
    },
    {
      validator: (request: ExecRequest) => {
        if (!request?.command) throw new Error('command: required');
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
      setCurrentDetails(describe(state));
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
