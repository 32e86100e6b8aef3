// EnvRunClient: the control plane's library for runs. Starts runs, waits for their execution target,
// completes, renews, retries and cancels them, lists them from visibility. It speaks only to Temporal:
// no database, no driver, nothing that has to run beside the worker, so a control plane can embed it as is.
// Every input is parsed here, once, before anything starts.
import {
  Client,
  Connection,
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  type WorkflowHandle,
} from '@temporalio/client';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import {
  CompleteRunSchema,
  ExecRequestSchema,
  ExternalId,
  RealizeRequestSchema,
  ReleaseRequestSchema,
  RunRequestSchema,
  SEARCH_ATTRIBUTES,
  WORKFLOW_TYPE,
  completeUpdate,
  execUpdate,
  getCommandsQuery,
  getRunQuery,
  realizeUpdate,
  releaseRequestSignal,
  renewUpdate,
  retryRealizationUpdate,
  runWorkflowId,
  waitLeasedUpdate,
  waitReadyUpdate,
  type CompleteRun,
  type ExecRequest,
  type CommandOutcome,
  type CommandSummary,
  type LeasedRun,
  type RealizeRequestInput,
  type ReleaseRequestInput,
  type RunWorkflowResult,
  type RunRequest,
  type RunRequestInput,
  type RunResult,
  type RunState,
} from '../contracts/index.js';
import type { ReapedLease } from '../contracts/reaper.js';
import { loadClientConfig, type ClientConfig } from './config.js';
import { NotFoundError, RunEndedError, RunFailedError, RunStateError, fromTemporal, parseInput } from './errors.js';
import { installReaperSchedule } from './reaper-schedule.js';
import { endedAs, nothingToCancel, type EnvironmentRunWorkflow } from './run-outcome.js';
import { listRuns, readinessStats, type ListedRun, type ReadinessStats, type RunFilter } from './visibility.js';

export type { EnvironmentRunWorkflow } from './run-outcome.js';

export interface EnvRunClientOptions {
  client: Client;
  taskQueue: string;
  onClose?: () => Promise<void>;
  /** Fields every run request gets unless it sets them (e.g. `awaitRetryMs`, `leaseTtlMs`). */
  runDefaults?: Partial<RunRequestInput>;
}

export interface StartedRun {
  workflowId: string;
  /** False when the run already existed: starting the same run twice reaches the same workflow. */
  started: boolean;
}

export class EnvRunClient {
  readonly temporal: Client;
  readonly taskQueue: string;
  private readonly onClose?: () => Promise<void>;
  private readonly runDefaults: Partial<RunRequestInput>;

  constructor(options: EnvRunClientOptions) {
    this.runDefaults = options.runDefaults ?? {};
    this.temporal = options.client;
    this.taskQueue = options.taskQueue;
    this.onClose = options.onClose;
  }

  /** Connects to Temporal with the same configuration as the worker (environment variables, envconfig profiles). */
  static async connect(config: ClientConfig = loadClientConfig()): Promise<EnvRunClient> {
    const connection = await Connection.connect(config.temporal.connection);
    return new EnvRunClient({
      client: new Client({ connection, namespace: config.temporal.namespace }),
      taskQueue: config.taskQueue,
      onClose: () => connection.close(),
    });
  }

  async close(): Promise<void> {
    await this.onClose?.();
  }

  private workflowOptions(request: RunRequest) {
    return {
      workflowId: runWorkflowId(request.companyId, request.heartbeatRunId),
      taskQueue: this.taskQueue,
      args: [request] as [RunRequestInput],
      workflowIdConflictPolicy: 'USE_EXISTING' as const,
      // A finished run is never started again under the same id.
      workflowIdReusePolicy: 'REJECT_DUPLICATE' as const,
      typedSearchAttributes: [
        { key: SEARCH_ATTRIBUTES.companyId, value: request.companyId },
        { key: SEARCH_ATTRIBUTES.heartbeatRunId, value: request.heartbeatRunId },
        { key: SEARCH_ATTRIBUTES.phase, value: 'resolving' },
      ],
      staticSummary: `run ${request.heartbeatRunId} of company ${request.companyId}`,
      staticDetails:
        `**company:** ${request.companyId}\n\n**heartbeat run:** ${request.heartbeatRunId}\n\n` +
        `**environment:** ${request.environmentId ?? 'company default'}`,
    };
  }

  /** Starts the run (or finds it, when it was already started). Bad input throws InvalidInputError. */
  async startRun(input: RunRequestInput): Promise<StartedRun> {
    const request = parseInput(RunRequestSchema, { ...this.runDefaults, ...input }, 'request');
    const options = this.workflowOptions(request);
    try {
      const handle = await this.temporal.workflow.start<EnvironmentRunWorkflow>(WORKFLOW_TYPE, options);
      return { workflowId: handle.workflowId, started: handle.firstExecutionRunId !== undefined };
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        return { workflowId: options.workflowId, started: false };
      }
      throw fromTemporal(err, runName(request.companyId, request.heartbeatRunId));
    }
  }

  /**
   * Starts the run and waits until it is ready, in one round trip (update-with-start). Returns the result
   * (lease, execution target, …) or throws a RunFailedError with the run's code.
   */
  async startRunAndWaitReady(input: RunRequestInput): Promise<RunResult> {
    const request = parseInput(RunRequestSchema, { ...this.runDefaults, ...input }, 'request');
    const options = this.workflowOptions(request);
    const startWorkflowOperation = new WithStartWorkflowOperation<EnvironmentRunWorkflow>(WORKFLOW_TYPE, options);
    try {
      return await this.temporal.workflow.executeUpdateWithStart(waitReadyUpdate, { startWorkflowOperation });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        return this.endedRun(request.companyId, request.heartbeatRunId);
      }
      throw fromTemporal(err, runName(request.companyId, request.heartbeatRunId));
    }
  }

  /**
   * Starts a run that realizes on request and waits until it holds its lease (update-with-start). Returns
   * the environment and the lease as stored, or throws a RunFailedError with the run's code.
   */
  async startRunAndWaitLeased(input: Omit<RunRequestInput, 'realize'>): Promise<LeasedRun> {
    const request = parseInput(RunRequestSchema, { ...this.runDefaults, ...input, realize: 'on_request' }, 'request');
    const startWorkflowOperation = new WithStartWorkflowOperation<EnvironmentRunWorkflow>(
      WORKFLOW_TYPE,
      this.workflowOptions(request),
    );
    try {
      return await this.temporal.workflow.executeUpdateWithStart(waitLeasedUpdate, { startWorkflowOperation });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        // The same run started before and has ended: say how, like any call on an ended run.
        return this.endedRun(request.companyId, request.heartbeatRunId);
      }
      throw fromTemporal(err, runName(request.companyId, request.heartbeatRunId));
    }
  }

  /**
   * Runs a command in a ready run's target. The run's workflow hands it to the worker that holds the run's
   * resource (its host's queue for a local folder or a sandbox on that host): this process runs no driver.
   * Arguments are passed as data, never through a shell; the command sees only the given environment. Its
   * output goes to the command journal in the store (read it with `EnvRunAdmin.streamCommand`); the answer
   * carries the command's id, how it ended, its sizes and the last `tailBytes` of each stream. `wait:
   * false` answers once it is started. The same `commandId` twice is one command: a caller that lost the
   * answer asks again and gets it, the command is not run again.
   */
  async exec(companyId: string, heartbeatRunId: string, input: ExecRequest): Promise<CommandOutcome> {
    const request = parseInput(ExecRequestSchema, input, 'exec');
    const withId = { ...request, commandId: request.commandId ?? randomUUID() };
    return this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(execUpdate, { args: [withId] }));
  }

  /** The run's commands as its workflow knows them (id, status, exit, sizes), oldest first. */
  async commands(companyId: string, heartbeatRunId: string): Promise<CommandSummary[]> {
    return this.onRun(companyId, heartbeatRunId, (run) => run.query(getCommandsQuery));
  }

  /** Realizes a run started to realize on request and waits until it is ready. */
  async realizeRun(companyId: string, heartbeatRunId: string, input: RealizeRequestInput): Promise<RunResult> {
    const request = parseInput(RealizeRequestSchema, input, 'realize');
    return this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(realizeUpdate, { args: [request] }));
  }

  /** Waits until a started run is ready. */
  async waitReady(companyId: string, heartbeatRunId: string): Promise<RunResult> {
    try {
      return await this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(waitReadyUpdate));
    } catch (err) {
      if (err instanceof RunFailedError) throw err;
      return this.endedRun(companyId, heartbeatRunId);
    }
  }

  /**
   * A run that has ended is never reported as ready (its lease is released, its target gone): a failed or
   * cancelled run throws its RunFailedError, any other ended run a RunEndedError saying how it ended.
   */
  private async endedRun(companyId: string, heartbeatRunId: string): Promise<never> {
    const outcome = await this.onRun(companyId, heartbeatRunId, (run) => run.result());
    throw new RunEndedError(
      `run ${runWorkflowId(companyId, heartbeatRunId)} already ended: completed, status ${outcome.status}`,
      'completed',
      outcome.status,
    );
  }

  /** The run as the workflow sees it: phase, lease, target, error. Null when there is no such run. */
  async getRun(companyId: string, heartbeatRunId: string): Promise<RunState | null> {
    return orNull(this.onRun(companyId, heartbeatRunId, (run) => run.query(getRunQuery)));
  }

  /**
   * The run's phase as its search attributes show it: answered by the server, with no worker involved, so
   * it can be read at any moment of the run. Null when there is no such run.
   */
  async phaseOf(companyId: string, heartbeatRunId: string): Promise<string | null> {
    const description = await orNull(this.onRun(companyId, heartbeatRunId, (run) => run.describe()));
    return description?.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase) ?? null;
  }

  /** Waits until the run's workflow has ended and returns its final state; null when there is no such run. */
  async waitEnded(companyId: string, heartbeatRunId: string): Promise<RunState | null> {
    try {
      await this.onRun(companyId, heartbeatRunId, (run) => run.result());
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      // A failed or cancelled run has ended too: its state says how.
    }
    return this.getRun(companyId, heartbeatRunId);
  }

  /**
   * The agent is done: the workflow releases the lease. Returns the run after release (`result`: null). A
   * run that is not ready (or already completed) is refused with RunStateError saying why.
   * `providerResourceDisposition` (`keep_running`, `stop_and_retain`, `destroy`; omitted: the lease policy
   * decides) says what becomes of the provider resource; `cancelActiveWork`, that the provider stops
   * commands still running instead of waiting for them.
   */
  async completeRun(
    companyId: string,
    heartbeatRunId: string,
    completion: z.input<typeof CompleteRunSchema>,
  ): Promise<RunState> {
    const parsed: CompleteRun = parseInput(CompleteRunSchema, completion, 'completion');
    return this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(completeUpdate, { args: [parsed] }));
  }

  /** An operator retries a run's failed realization (refused unless it is awaiting retry). */
  async retryRealization(companyId: string, heartbeatRunId: string): Promise<RunState> {
    return this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(retryRealizationUpdate));
  }

  /** The control plane is alive: push the held lease's expiry out by the run's TTL. */
  async renewRun(companyId: string, heartbeatRunId: string): Promise<RunState> {
    return this.onRun(companyId, heartbeatRunId, (run) => run.executeUpdate(renewUpdate));
  }

  /** Runs from Temporal visibility, filtered by envrun's search attributes. */
  async listRuns(filter: RunFilter = {}, limit = 1000): Promise<ListedRun[]> {
    return listRuns(this.temporal, filter, limit);
  }

  /**
   * Requested→ready p50/p95 per driver/provider over runs started in the last `sinceMs`, optionally of one
   * company.
   */
  async stats(sinceMs: number, filter: { companyId?: string } = {}): Promise<ReadinessStats[]> {
    return readinessStats(this.temporal, sinceMs, filter);
  }

  /** Retries every run awaiting retry that matches the filter; returns the runs retried. */
  async retryAwaiting(filter: Omit<RunFilter, 'phase'> = {}): Promise<ListedRun[]> {
    const waiting = await this.listRuns({ ...filter, phase: 'awaiting_retry' });
    const retried: ListedRun[] = [];
    for (const run of waiting) {
      if (!run.companyId || !run.heartbeatRunId) continue;
      try {
        await this.retryRealization(run.companyId, run.heartbeatRunId);
        retried.push(run);
      } catch (err) {
        if (!(err instanceof RunStateError)) throw err; // no longer awaiting: skipped
      }
    }
    return retried;
  }

  /**
   * Cancels the run; its lease is released all the same. Resolves once the workflow has ended. A run that
   * had already ended is refused with RunEndedError saying how it ended: Temporal itself accepts a cancel
   * request for a closed workflow and does nothing. (A cancel that reaches a run still open, but already
   * completing, is accepted: the run ends as its completion says, and its lease is released either way.)
   * `release` says what becomes of the provider resource and whether running commands are stopped, as for
   * completeRun; it reaches the run (a signal) just before the cancel.
   */
  async cancelRun(companyId: string, heartbeatRunId: string, release: ReleaseRequestInput = {}): Promise<void> {
    const what = runName(companyId, heartbeatRunId);
    const request = parseInput(ReleaseRequestSchema, release, 'release');
    const handle = this.handle(companyId, heartbeatRunId);
    const before = await this.onRun(companyId, heartbeatRunId, endedAs);
    if (before) throw nothingToCancel(what, before);
    if (Object.keys(request).length > 0) {
      try {
        await this.onRun(companyId, heartbeatRunId, (run) => run.signal(releaseRequestSignal, request));
      } catch (err) {
        // The run closed in between: nothing is left to cancel.
        const ended = await this.onRun(companyId, heartbeatRunId, endedAs);
        throw ended ? nothingToCancel(what, ended) : err;
      }
    }
    await this.onRun(companyId, heartbeatRunId, (run) => run.cancel());
    await handle.result().catch(() => undefined);
    // The run may have closed between the check above and the request: then the request left no trace.
    const after = await this.onRun(companyId, heartbeatRunId, endedAs);
    if (after && after.outcome !== 'cancelled') {
      const { events } = await handle.fetchHistory();
      if (!events?.some((e) => e.workflowExecutionCancelRequestedEventAttributes)) throw nothingToCancel(what, after);
    }
  }

  /** One call on the run's workflow, with Temporal's errors turned into envrun's (fromTemporal). */
  private async onRun<T>(
    companyId: string,
    heartbeatRunId: string,
    call: (run: WorkflowHandle<EnvironmentRunWorkflow>) => Promise<T>,
  ): Promise<T> {
    const run = this.handle(companyId, heartbeatRunId);
    try {
      return await call(run);
    } catch (err) {
      throw fromTemporal(err, runName(companyId, heartbeatRunId));
    }
  }

  /** The run's workflow handle; bad ids throw InvalidInputError. */
  handle(companyId: string, heartbeatRunId: string): WorkflowHandle<EnvironmentRunWorkflow> {
    parseInput(ExternalId, companyId, 'companyId');
    parseInput(ExternalId, heartbeatRunId, 'heartbeatRunId');
    return this.temporal.workflow.getHandle<EnvironmentRunWorkflow>(runWorkflowId(companyId, heartbeatRunId));
  }

  /** Creates the reaper's schedule (the worker does this at start unless ENVRUN_REAPER_EVERY=off). */
  async installReaper(every = '5m'): Promise<boolean> {
    return installReaperSchedule(this.temporal, this.taskQueue, every);
  }

  /** Runs one sweep now, on the worker, and returns what it released. */
  async reaperRunOnce(): Promise<ReapedLease[]> {
    return this.temporal.workflow.execute('reaper', {
      taskQueue: this.taskQueue,
      workflowId: `envrun-reaper-manual-${Date.now()}`,
      args: [],
    });
  }
}

function runName(companyId: string, heartbeatRunId: string): string {
  return `run ${heartbeatRunId} of company ${companyId}`;
}

/** The call's answer, or null when what it asked about does not exist. */
async function orNull<T>(call: Promise<T>): Promise<T | null> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof NotFoundError) return null;
    throw err;
  }
}
