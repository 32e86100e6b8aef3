// EnvRunClient: the control plane's library for runs. Starts runs, waits for their execution target,
// completes, renews, retries and cancels them, lists them from visibility. It speaks only to Temporal:
// no database, no driver, nothing that has to run beside the worker, so a control plane can embed it as is.
// Every input is parsed here, once, before anything starts.
import {
  Client,
  Connection,
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowExecutionStatusName,
  type WorkflowHandle,
} from '@temporalio/client';
import { z } from 'zod';
import {
  CompleteRunSchema,
  ExecRequestSchema,
  ExternalId,
  RealizeRequestSchema,
  RunRequestSchema,
  SEARCH_ATTRIBUTES,
  WORKFLOW_TYPE,
  completeUpdate,
  describeZodError,
  execUpdate,
  getRunQuery,
  realizeUpdate,
  renewUpdate,
  retryRealizationUpdate,
  runWorkflowId,
  waitLeasedUpdate,
  waitReadyUpdate,
  type CompleteRun,
  type ExecRequest,
  type ExecResult,
  type LeasedRun,
  type RealizeRequestInput,
  type RunOutcome as RunWorkflowResult,
  type RunRequest,
  type RunRequestInput,
  type RunResult,
  type RunState,
} from '../contracts/index.js';
import type { ReapedLease } from '../contracts/reaper.js';
import { loadClientConfig, type ClientConfig } from './config.js';
import {
  InvalidInputError,
  NotFoundError,
  RunEndedError,
  RunStateError,
  toEnvRunError,
  type RunOutcome,
} from './errors.js';
import { installReaperSchedule } from './reaper-schedule.js';

/** The run workflow's signature (workflows/environment-run.ts), for typed handles. */
export type EnvironmentRunWorkflow = (input: RunRequestInput) => Promise<RunWorkflowResult>;

/** Values that go into a visibility query: no quotes, nothing a query could be bent with. */
const SearchValue = ExternalId.or(z.uuid());

/** Temporal's closed statuses, as a run's outcome; any other status (running, paused) is an open run. */
const CLOSED: Partial<Record<WorkflowExecutionStatusName, RunOutcome>> = {
  COMPLETED: 'completed',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  TERMINATED: 'terminated',
  TIMED_OUT: 'timed_out',
  CONTINUED_AS_NEW: 'continued_as_new',
};

/** Parses `value`; bad input throws InvalidInputError naming the field under `prefix`. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new InvalidInputError(describeZodError(result.error, prefix));
  return result.data;
}

export interface EnvRunClientOptions {
  client: Client;
  taskQueue: string;
  onClose?: () => Promise<void>;
  /** Fields every run request gets unless it sets them (e.g. `awaitRetryMs`, `leaseTtlMs`). */
  runDefaults?: Partial<RunRequestInput>;
}

/** A run as Temporal visibility lists it (no database involved). */
export interface ListedRun {
  workflowId: string;
  companyId: string | null;
  heartbeatRunId: string | null;
  phase: string | null;
  errorCode: string | null;
  environmentId: string | null;
  status: string;
  startTime: string;
}

export interface ReadinessStats {
  driver: string;
  provider: string;
  runs: number;
  p50Ms: number;
  p95Ms: number;
}

export interface RunFilter {
  companyId?: string;
  phase?: string;
  errorCode?: string;
  environmentId?: string;
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
      throw err;
    }
  }

  /**
   * Starts the run and waits until it is ready, in one round trip (update-with-start). Returns the result
   * (lease, execution target, …) or throws an EnvRunError with the run's code.
   */
  async startRunAndWaitReady(input: RunRequestInput): Promise<RunResult> {
    const request = parseInput(RunRequestSchema, { ...this.runDefaults, ...input }, 'request');
    const options = this.workflowOptions(request);
    const startWorkflowOperation = new WithStartWorkflowOperation<EnvironmentRunWorkflow>(WORKFLOW_TYPE, options);
    try {
      return await this.temporal.workflow.executeUpdateWithStart(waitReadyUpdate, { startWorkflowOperation });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return this.endedRun(options.workflowId);
      throw toEnvRunError(err) ?? err;
    }
  }

  /**
   * Starts a run that realizes on request and waits until it holds its lease (update-with-start). Returns
   * the environment and the lease as stored, or throws an EnvRunError with the run's code.
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
        return this.endedRun(runWorkflowId(request.companyId, request.heartbeatRunId));
      }
      throw toEnvRunError(err) ?? err;
    }
  }

  /**
   * Runs a command in a ready run's target. The run's workflow hands it to the worker that holds the run's
   * resource (its host's queue for a local folder or a sandbox on that host): this process runs no driver.
   * Arguments are passed as data, never through a shell; the command sees only the given environment; its
   * output is capped; its exit code is kept.
   */
  async exec(companyId: string, heartbeatRunId: string, input: ExecRequest): Promise<ExecResult> {
    const request = parseInput(ExecRequestSchema, input, 'exec');
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(execUpdate, { args: [request] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      }
      const runError = toEnvRunError(err);
      if (runError) throw runError;
      if (err instanceof WorkflowUpdateFailedError && err.cause) {
        throw new InvalidInputError(`run: ${err.cause.message.replace(/^the run is/, `${heartbeatRunId} is`)}`);
      }
      throw err;
    }
  }

  /** Realizes a run started to realize on request and waits until it is ready. */
  async realizeRun(companyId: string, heartbeatRunId: string, input: RealizeRequestInput): Promise<RunResult> {
    const request = parseInput(RealizeRequestSchema, input, 'realize');
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(realizeUpdate, { args: [request] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      }
      const runError = toEnvRunError(err);
      if (runError) throw runError;
      if (err instanceof WorkflowUpdateFailedError && err.cause) throw new RunStateError(err.cause.message);
      throw err;
    }
  }

  /** Waits until a started run is ready. */
  async waitReady(companyId: string, heartbeatRunId: string): Promise<RunResult> {
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(waitReadyUpdate);
    } catch (err) {
      const runError = toEnvRunError(err);
      if (runError) throw runError;
      return this.endedRun(handle.workflowId);
    }
  }

  /**
   * A run that has ended is never reported as ready (its lease is released, its target gone): a failed or
   * cancelled run throws its EnvRunError, any other ended run a RunEndedError saying how it ended.
   */
  private async endedRun(workflowId: string): Promise<never> {
    const handle = this.temporal.workflow.getHandle<EnvironmentRunWorkflow>(workflowId);
    let outcome: RunWorkflowResult;
    try {
      outcome = await handle.result();
    } catch (err) {
      throw toEnvRunError(err) ?? err;
    }
    throw new RunEndedError(
      `run ${workflowId} already ended: completed, status ${outcome.status}`,
      'completed',
      outcome.status,
    );
  }

  /** The run as the workflow sees it: phase, lease, target, error. Null when there is no such run. */
  async getRun(companyId: string, heartbeatRunId: string): Promise<RunState | null> {
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.query(getRunQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  }

  /**
   * The run's phase as its search attributes show it: answered by the server, with no worker involved, so
   * it can be read at any moment of the run. Null when there is no such run.
   */
  async phaseOf(companyId: string, heartbeatRunId: string): Promise<string | null> {
    try {
      const description = await this.handle(companyId, heartbeatRunId).describe();
      return description.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase) ?? null;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      throw err;
    }
  }

  /** Waits until the run's workflow has ended and returns its final state; null when there is no such run. */
  async waitEnded(companyId: string, heartbeatRunId: string): Promise<RunState | null> {
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      await handle.result();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return null;
      // A failed or cancelled run has ended too: its state says how.
    }
    return this.getRun(companyId, heartbeatRunId);
  }

  /** The agent is done: the workflow releases the lease. Returns the run after release (`result`: null). */
  async completeRun(
    companyId: string,
    heartbeatRunId: string,
    completion: z.input<typeof CompleteRunSchema>,
  ): Promise<RunState> {
    const parsed: CompleteRun = parseInput(CompleteRunSchema, completion, 'completion');
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(completeUpdate, { args: [parsed] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw notFound(companyId, heartbeatRunId);
      // The workflow's validator refused it (not ready, already completed): say why.
      if (err instanceof WorkflowUpdateFailedError && err.cause) throw new RunStateError(err.cause.message);
      throw toEnvRunError(err) ?? err;
    }
  }

  /** An operator retries a run's failed realization (refused unless it is awaiting retry). */
  async retryRealization(companyId: string, heartbeatRunId: string): Promise<RunState> {
    return this.runUpdate(companyId, heartbeatRunId, retryRealizationUpdate);
  }

  /** The control plane is alive: push the held lease's expiry out by the run's TTL. */
  async renewRun(companyId: string, heartbeatRunId: string): Promise<RunState> {
    return this.runUpdate(companyId, heartbeatRunId, renewUpdate);
  }

  private async runUpdate(companyId: string, heartbeatRunId: string, update: typeof renewUpdate): Promise<RunState> {
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(update);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw notFound(companyId, heartbeatRunId);
      if (err instanceof WorkflowUpdateFailedError && err.cause) throw new RunStateError(err.cause.message);
      throw toEnvRunError(err) ?? err;
    }
  }

  /** Runs from Temporal visibility, filtered by envrun's search attributes. */
  async listRuns(filter: RunFilter = {}, limit = 1000): Promise<ListedRun[]> {
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
    const add = (key: { name: string }, value: string | undefined, field: string) => {
      if (value === undefined) return;
      parseInput(SearchValue, value, field);
      clauses.push(`${key.name} = '${value}'`);
    };
    add(SEARCH_ATTRIBUTES.companyId, filter.companyId, 'companyId');
    add(SEARCH_ATTRIBUTES.phase, filter.phase, 'phase');
    add(SEARCH_ATTRIBUTES.errorCode, filter.errorCode, 'errorCode');
    add(SEARCH_ATTRIBUTES.environmentId, filter.environmentId, 'environmentId');
    const runs: ListedRun[] = [];
    for await (const wf of this.temporal.workflow.list({ query: clauses.join(' AND ') })) {
      const sa = wf.typedSearchAttributes;
      runs.push({
        workflowId: wf.workflowId,
        companyId: sa.get(SEARCH_ATTRIBUTES.companyId) ?? null,
        heartbeatRunId: sa.get(SEARCH_ATTRIBUTES.heartbeatRunId) ?? null,
        phase: sa.get(SEARCH_ATTRIBUTES.phase) ?? null,
        errorCode: sa.get(SEARCH_ATTRIBUTES.errorCode) ?? null,
        environmentId: sa.get(SEARCH_ATTRIBUTES.environmentId) ?? null,
        status: wf.status.name,
        startTime: wf.startTime.toISOString(),
      });
      if (runs.length >= limit) break;
    }
    return runs;
  }

  /**
   * Requested→ready p50/p95 per driver/provider over runs started in the last `sinceMs`, optionally of one
   * company.
   */
  async stats(sinceMs: number, filter: { companyId?: string } = {}): Promise<ReadinessStats[]> {
    const since = new Date(Date.now() - sinceMs).toISOString();
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`, `StartTime > '${since}'`];
    if (filter.companyId !== undefined) {
      parseInput(SearchValue, filter.companyId, 'companyId');
      clauses.push(`${SEARCH_ATTRIBUTES.companyId.name} = '${filter.companyId}'`);
    }
    const groups = new Map<string, number[]>();
    clauses.push(`${SEARCH_ATTRIBUTES.readyMs.name} IS NOT NULL`);
    for await (const wf of this.temporal.workflow.list({ query: clauses.join(' AND ') })) {
      const sa = wf.typedSearchAttributes;
      const readyMs = sa.get(SEARCH_ATTRIBUTES.readyMs);
      if (typeof readyMs !== 'number') continue;
      const key = `${sa.get(SEARCH_ATTRIBUTES.driver) ?? 'none'}/${sa.get(SEARCH_ATTRIBUTES.provider) ?? 'none'}`;
      groups.set(key, [...(groups.get(key) ?? []), readyMs]);
    }
    const rank = (sorted: number[], p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
    return [...groups.entries()].sort().map(([key, values]) => {
      const sorted = [...values].sort((a, b) => a - b);
      const [driver, provider] = key.split('/') as [string, string];
      return { driver, provider, runs: sorted.length, p50Ms: rank(sorted, 50), p95Ms: rank(sorted, 95) };
    });
  }

  /** Retries every run awaiting retry that matches the filter; returns the runs retried. */
  async retryAwaiting(filter: Omit<RunFilter, 'phase'> = {}): Promise<ListedRun[]> {
    const waiting = await this.listRuns({ ...filter, phase: 'awaiting_retry' });
    const retried: ListedRun[] = [];
    for (const run of waiting) {
      if (!run.companyId || !run.heartbeatRunId) continue;
      try {
        await this.temporal.workflow.getHandle(run.workflowId).executeUpdate(retryRealizationUpdate);
        retried.push(run);
      } catch (err) {
        if (!(err instanceof WorkflowUpdateFailedError)) throw err; // no longer awaiting: skipped
      }
    }
    return retried;
  }

  /**
   * Cancels the run; its lease is released all the same. Resolves once the workflow has ended. A run that
   * had already ended is refused with RunEndedError saying how it ended: Temporal itself accepts a cancel
   * request for a closed workflow and does nothing. (A cancel that reaches a run still open, but already
   * completing, is accepted: the run ends as its completion says, and its lease is released either way.)
   */
  async cancelRun(companyId: string, heartbeatRunId: string): Promise<void> {
    const handle = this.handle(companyId, heartbeatRunId);
    const alreadyEnded = ({ outcome, detail }: { outcome: RunOutcome; detail: string | null }) => {
      const how = detail ? `${outcome}, ${outcome === 'failed' ? 'error' : 'status'} ${detail}` : outcome;
      return new RunEndedError(
        `run ${heartbeatRunId} of company ${companyId} already ended, nothing to cancel: ${how}`,
        outcome,
        detail,
      );
    };
    const before = await this.runOutcome(handle, companyId, heartbeatRunId);
    if (before) throw alreadyEnded(before);
    try {
      await handle.cancel();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw notFound(companyId, heartbeatRunId);
      throw err;
    }
    await handle.result().catch(() => undefined);
    // The run may have closed between the check above and the request: then the request left no trace.
    const after = await this.runOutcome(handle, companyId, heartbeatRunId);
    if (after && after.outcome !== 'cancelled') {
      const { events } = await handle.fetchHistory();
      if (!events?.some((e) => e.workflowExecutionCancelRequestedEventAttributes)) throw alreadyEnded(after);
    }
  }

  /** How the run's workflow ended (with its error code, or its completion's status), or null while it is open. */
  private async runOutcome(
    handle: WorkflowHandle<EnvironmentRunWorkflow>,
    companyId: string,
    heartbeatRunId: string,
  ): Promise<{ outcome: RunOutcome; detail: string | null } | null> {
    let description: Awaited<ReturnType<typeof handle.describe>>;
    try {
      description = await handle.describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw notFound(companyId, heartbeatRunId);
      throw err;
    }
    const outcome = CLOSED[description.status.name];
    if (!outcome) return null;
    if (outcome === 'failed') {
      return { outcome, detail: description.typedSearchAttributes.get(SEARCH_ATTRIBUTES.errorCode) ?? null };
    }
    if (outcome === 'completed')
      return {
        outcome,
        detail: await handle.result().then(
          (r) => r.status,
          () => null,
        ),
      };
    return { outcome, detail: null };
  }

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

function notFound(companyId: string, heartbeatRunId: string): NotFoundError {
  return new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
}
