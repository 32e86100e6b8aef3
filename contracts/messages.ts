// Workflow message definitions and search attribute keys: shared by the workflow, the worker and the client.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { Environment, EnvironmentLease } from './records.js';
import type { CommandOutcome, CommandSummary } from './commands.js';
import type { ExecRequest } from './target.js';
import type { CompleteRun, RealizeRequest, ReleaseRequest, RunResult, RunState } from './run.js';

/** The run's state, answered from the workflow (phase, lease, target, error). */
export const getRunQuery = defineQuery<RunState>('getRun');
/** Waits until the run is ready and returns its result, or fails with the run's error code. */
export const waitReadyUpdate = defineUpdate<RunResult>('waitReady');
/** What a leased run holds: its environment and lease (the rows as stored). */
export interface LeasedRun {
  environment: Environment;
  lease: EnvironmentLease;
}
/** Waits until the run holds its lease and returns it, or fails with the run's error code. */
export const waitLeasedUpdate = defineUpdate<LeasedRun>('waitLeased');
/** Realizes a run that realizes on request, then waits until it is ready. Refused unless awaiting it. */
export const realizeUpdate = defineUpdate<RunResult, [RealizeRequest]>('realize');
/**
 * Starts a command in a ready run's target, on the worker that holds its resource; answers when it ends
 * (or at once, `wait: false`). The same `commandId` twice is one command. Refused unless ready.
 */
export const execUpdate = defineUpdate<CommandOutcome, [ExecRequest]>('exec');
/** The run's commands (id, status, exit, sizes; never output), oldest first. */
export const getCommandsQuery = defineQuery<CommandSummary[]>('getCommands');
/** The control plane's agent is done: release the lease. Refused unless the run is ready. */
export const completeUpdate = defineUpdate<RunState, [CompleteRun]>('complete');
/** How the release of a run about to be cancelled treats its resource: sent just before the cancel. */
export const releaseRequestSignal = defineSignal<[ReleaseRequest]>('releaseRequest');

/** An operator retries a failed realization. Refused unless the run is awaiting retry. */
export const retryRealizationUpdate = defineUpdate<RunState>('retryRealization');
/** The same as a signal, so the Temporal UI's signal action works. */
export const retryRealizationSignal = defineSignal('retryRealization');
/** The control plane is alive: push the lease's expiry out by its TTL. Refused unless ready. */
export const renewUpdate = defineUpdate<RunState>('renew');

/** Capacity gates (one workflow per environment or execution workspace): a FIFO of runs and its holders. */
export const requestSlotSignal = defineSignal<[string]>('requestSlot');
export const releaseSlotSignal = defineSignal<[string]>('releaseSlot');
/** Sent by a gate to the run it admits, with the gate's workflow id. */
export const slotGrantedSignal = defineSignal<[string]>('slotGranted');
/** The reaper found the worker host of the run's resource gone (its id as the argument). */
export const hostLostSignal = defineSignal<[string]>('hostLost');
export interface GateState {
  capacity: number;
  holders: string[];
  queue: string[];
}
export const getGateQuery = defineQuery<GateState>('getGate');

export const SEARCH_ATTRIBUTES = {
  phase: defineSearchAttributeKey('EnvRunPhase', SearchAttributeType.KEYWORD),
  errorCode: defineSearchAttributeKey('EnvRunErrorCode', SearchAttributeType.KEYWORD),
  companyId: defineSearchAttributeKey('EnvRunCompanyId', SearchAttributeType.KEYWORD),
  environmentId: defineSearchAttributeKey('EnvRunEnvironmentId', SearchAttributeType.KEYWORD),
  driver: defineSearchAttributeKey('EnvRunDriver', SearchAttributeType.KEYWORD),
  provider: defineSearchAttributeKey('EnvRunProvider', SearchAttributeType.KEYWORD),
  heartbeatRunId: defineSearchAttributeKey('EnvRunHeartbeatRunId', SearchAttributeType.KEYWORD),
  /** Milliseconds from the start request to ready, set with the ready phase (readiness statistics). */
  readyMs: defineSearchAttributeKey('EnvRunReadyMs', SearchAttributeType.INT),
} as const;

/** `--search-attribute` arguments for `temporal server start-dev` and the operator API. */
export const SEARCH_ATTRIBUTE_REGISTRATIONS = Object.values(SEARCH_ATTRIBUTES).map((key) => ({
  name: key.name,
  type: key.type === SearchAttributeType.INT ? ('Int' as const) : ('Keyword' as const),
}));
