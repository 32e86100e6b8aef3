// EnvRunClient: the control plane's library. Starts runs, waits for their execution target, completes and
// cancels them, and manages environments. Every input is parsed here, once, before anything starts.
import {
  Client, Connection, WithStartWorkflowOperation, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, WorkflowUpdateFailedError,
  type WorkflowExecutionStatusName, type WorkflowHandle,
} from '@temporalio/client';
import { z } from 'zod';
import { createDrivers, type DriverRegistry } from '../drivers/registry.js';
import { openDatabase, resolveDatabaseUrl, type Database } from '../store/db.js';
import { Store } from '../store/store.js';
import type { ProbeResult } from '../drivers/providers/types.js';
import { releaseOrphanLease, type ReapedLease } from '../leases/release.js';
import { installReaperSchedule } from '../worker/reaper-schedule.js';
import {
  ACTIVITY_ACTIONS, CompleteRunSchema, DRIVER_CONFIG_SCHEMAS, DisplayName, Uuid, DriverSchema, ExecRequestSchema, ExternalId, LeaseStatusSchema,
  NewExecutionWorkspaceSchema, RunRequestSchema, SEARCH_ATTRIBUTES, WORKFLOW_TYPE, completeUpdate, describeZodError, getRunQuery, renewUpdate,
  retryRealizationUpdate, runWorkflowId, waitReadyUpdate,
  type CompleteRun, type Driver, type Environment, type EnvironmentLease, type ExecRequest, type ExecResult,
  type ExecutionWorkspace, type LeaseStatus, type NewExecutionWorkspaceInput, type RunRequest, type RunRequestInput, type RunResult, type RunState, type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import type { environmentRun } from '../workflows/environment-run.js';
import { loadConfig, type EnvRunConfig } from '../worker/config.js';
import { loadProviders } from '../worker/deps.js';
import { InvalidInputError, NotFoundError, RunEndedError, RunStateError, toEnvRunError, type RunOutcome } from './errors.js';

export { EnvRunError, InvalidInputError, NotFoundError, RunEndedError, RunStateError, type RunOutcome } from './errors.js';

/** Values that go into a visibility query: no quotes, nothing a query could be bent with. */
const SearchValue = ExternalId.or(z.uuid());

/** Temporal's closed statuses, as a run's outcome; any other status (running, paused) is an open run. */
const CLOSED: Partial<Record<WorkflowExecutionStatusName, RunOutcome>> = {
  COMPLETED: 'completed', FAILED: 'failed', CANCELLED: 'cancelled', TERMINATED: 'terminated', TIMED_OUT: 'timed_out',
  CONTINUED_AS_NEW: 'continued_as_new',
};

function parse<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new InvalidInputError(describeZodError(result.error, prefix));
  return result.data;
}

export interface EnvRunClientOptions {
  client: Client;
  store: Store;
  taskQueue: string;
  drivers: DriverRegistry;
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
  readonly store: Store;
  readonly taskQueue: string;
  private readonly drivers: DriverRegistry;
  private readonly onClose?: () => Promise<void>;
  private readonly runDefaults: Partial<RunRequestInput>;

  constructor(options: EnvRunClientOptions) {
    this.runDefaults = options.runDefaults ?? {};
    this.temporal = options.client;
    this.store = options.store;
    this.taskQueue = options.taskQueue;
    this.drivers = options.drivers;
    this.onClose = options.onClose;
  }

  /** Connects with the same configuration as the worker (environment variables, envconfig profiles). */
  static async connect(config: EnvRunConfig = loadConfig()): Promise<EnvRunClient> {
    const providers = await loadProviders(config);
    const url = await resolveDatabaseUrl({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
    const database: Database = await openDatabase(url, 4);
    let connection: Connection;
    try {
      connection = await Connection.connect(config.temporal.connection);
    } catch (err) {
      await database.close();
      throw err;
    }
    return new EnvRunClient({
      client: new Client({ connection, namespace: config.temporal.namespace }),
      store: new Store(database.db),
      taskQueue: config.taskQueue,
      drivers: createDrivers(providers),
      onClose: async () => {
        await connection.close();
        await database.close();
      },
    });
  }

  async close(): Promise<void> {
    await this.onClose?.();
  }

  // ---- runs ----------------------------------------------------------------------------------------
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
      staticDetails: `**company:** ${request.companyId}\n\n**heartbeat run:** ${request.heartbeatRunId}\n\n**environment:** ${request.environmentId ?? 'company default'}`,
    };
  }

  /** Starts the run (or finds it, when it was already started). Bad input throws InvalidInputError. */
  async startRun(input: RunRequestInput): Promise<StartedRun> {
    const request = parse(RunRequestSchema, { ...this.runDefaults, ...input }, 'request');
    const options = this.workflowOptions(request);
    try {
      const handle = await this.temporal.workflow.start<typeof environmentRun>(WORKFLOW_TYPE, options);
      return { workflowId: handle.workflowId, started: handle.firstExecutionRunId !== undefined };
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId: options.workflowId, started: false };
      throw err;
    }
  }

  /**
   * Starts the run and waits until it is ready, in one round trip (update-with-start). Returns the result
   * (lease, execution target, …) or throws an EnvRunError with the run's code.
   */
  async startRunAndWaitReady(input: RunRequestInput): Promise<RunResult> {
    const request = parse(RunRequestSchema, { ...this.runDefaults, ...input }, 'request');
    const options = this.workflowOptions(request);
    const startWorkflowOperation = new WithStartWorkflowOperation<typeof environmentRun>(WORKFLOW_TYPE, options);
    try {
      return await this.temporal.workflow.executeUpdateWithStart(waitReadyUpdate, { startWorkflowOperation });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return this.resultOfClosedRun(options.workflowId);
      throw toEnvRunError(err) ?? err;
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
      return this.resultOfClosedRun(handle.workflowId);
    }
  }

  private async resultOfClosedRun(workflowId: string): Promise<RunResult> {
    const handle = this.temporal.workflow.getHandle(workflowId);
    try {
      await handle.result();
    } catch (err) {
      throw toEnvRunError(err) ?? err;
    }
    const state = await handle.query(getRunQuery);
    if (!state.result) throw new Error(`run ${workflowId} ended without a result`);
    return state.result;
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

  /** The agent is done: the workflow releases the lease. Returns the run after release. */
  async completeRun(companyId: string, heartbeatRunId: string, completion: z.input<typeof CompleteRunSchema>): Promise<RunState> {
    const parsed: CompleteRun = parse(CompleteRunSchema, completion, 'completion');
    const handle = this.handle(companyId, heartbeatRunId);
    try {
      return await handle.executeUpdate(completeUpdate, { args: [parsed] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
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
      if (err instanceof WorkflowNotFoundError) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      if (err instanceof WorkflowUpdateFailedError && err.cause) throw new RunStateError(err.cause.message);
      throw toEnvRunError(err) ?? err;
    }
  }

  /** Runs from Temporal visibility, filtered by envrun's search attributes. */
  async listRuns(filter: RunFilter = {}, limit = 1000): Promise<ListedRun[]> {
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
    const add = (key: { name: string }, value: string | undefined, field: string) => {
      if (value === undefined) return;
      parse(SearchValue, value, field);
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

  /** p50/p95 of requested→ready per driver/provider, for runs started within the last `sinceMs`. */
  /** Requested→ready p50/p95 per driver/provider over runs started in the last `sinceMs`, optionally of one company. */
  async stats(sinceMs: number, filter: { companyId?: string } = {}): Promise<ReadinessStats[]> {
    const since = new Date(Date.now() - sinceMs).toISOString();
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`, `StartTime > '${since}'`];
    if (filter.companyId !== undefined) {
      parse(SearchValue, filter.companyId, 'companyId');
      clauses.push(`${SEARCH_ATTRIBUTES.companyId.name} = '${filter.companyId}'`);
    }
    const groups = new Map<string, number[]>();
    for await (const wf of this.temporal.workflow.list({ query: clauses.join(' AND ') })) {
      const memo = (wf.memo ?? {}) as { requestedToReadyMs?: number; driver?: string; provider?: string };
      if (typeof memo.requestedToReadyMs !== 'number') continue;
      const key = `${memo.driver}/${memo.provider}`;
      groups.set(key, [...(groups.get(key) ?? []), memo.requestedToReadyMs]);
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
      return new RunEndedError(`run ${heartbeatRunId} of company ${companyId} already ended, nothing to cancel: ${how}`, outcome, detail);
    };
    const before = await this.runOutcome(handle, companyId, heartbeatRunId);
    if (before) throw alreadyEnded(before);
    try {
      await handle.cancel();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
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
    handle: WorkflowHandle<typeof environmentRun>, companyId: string, heartbeatRunId: string,
  ): Promise<{ outcome: RunOutcome; detail: string | null } | null> {
    let description: Awaited<ReturnType<typeof handle.describe>>;
    try {
      description = await handle.describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
      throw err;
    }
    const outcome = CLOSED[description.status.name];
    if (!outcome) return null;
    if (outcome === 'failed') return { outcome, detail: description.typedSearchAttributes.get(SEARCH_ATTRIBUTES.errorCode) ?? null };
    if (outcome === 'completed') return { outcome, detail: await handle.result().then((r) => r.status, () => null) };
    return { outcome, detail: null };
  }

  /** Runs a command in a ready run's target through its driver, with only the given environment. */
  async exec(companyId: string, heartbeatRunId: string, input: ExecRequest): Promise<ExecResult> {
    const request = parse(ExecRequestSchema, input, 'exec');
    const state = await this.getRun(companyId, heartbeatRunId);
    if (!state) throw new NotFoundError(`run ${heartbeatRunId} of company ${companyId} not found`);
    if (state.phase !== 'ready' || !state.result) throw new InvalidInputError(`run: ${heartbeatRunId} is ${state.phase}, not ready`);
    const environment = await this.store.getEnvironment(companyId, state.result.lease.environmentId);
    if (!environment) throw new NotFoundError(`environment ${state.result.lease.environmentId} not found`);
    const driver = this.drivers[environment.driver];
    if (!driver) throw new InvalidInputError(`driver: ${environment.driver} cannot execute commands from this client`);
    const realization = state.result.workspaceRealization;
    const record = 'version' in realization ? (realization as WorkspaceRealizationRecord) : null;
    return driver.execute(
      { attempt: 1, idempotencyKey: state.workflowId },
      { environment, lease: state.result.lease, record },
      request,
    );
  }

  handle(companyId: string, heartbeatRunId: string): WorkflowHandle<typeof environmentRun> {
    parse(ExternalId, companyId, 'companyId');
    parse(ExternalId, heartbeatRunId, 'heartbeatRunId');
    return this.temporal.workflow.getHandle<typeof environmentRun>(runWorkflowId(companyId, heartbeatRunId));
  }

  // ---- environments --------------------------------------------------------------------------------
  /** Validates a driver config: the driver's schema, then its provider's, naming the bad field. */
  validateEnvironmentConfig(driver: Driver, config: unknown): Record<string, unknown> {
    const parsed = parse(DRIVER_CONFIG_SCHEMAS[driver], config ?? {}, 'config') as Record<string, unknown>;
    const impl = this.drivers[driver];
    if (impl) {
      try {
        return impl.validateConfig(parsed);
      } catch (err) {
        throw new InvalidInputError((err as Error).message);
      }
    }
    return parsed;
  }

  async createEnvironment(input: {
    companyId: string; name: string; driver: string; config?: unknown; description?: string | null;
  }): Promise<Environment> {
    const companyId = parse(ExternalId, input.companyId, 'companyId');
    const driver = parse(DriverSchema, input.driver, 'driver');
    const name = parse(DisplayName, input.name, 'name');
    const config = this.validateEnvironmentConfig(driver, input.config);
    if (driver === 'local' && (await this.store.listEnvironments(companyId)).some((e) => e.driver === 'local')) {
      throw new InvalidInputError(`driver: company ${companyId} already has a local environment`);
    }
    return this.store.createEnvironment({ companyId, name, driver, config, description: input.description ?? null });
  }

  async listEnvironments(companyId: string): Promise<Environment[]> {
    return this.store.listEnvironments(parse(ExternalId, companyId, 'companyId'));
  }

  /**
   * One of the company's environments. Another company's environment is indistinguishable from a missing
   * one: both are NotFoundError with the same message, so a control plane acting for a company can pass a
   * user-supplied id without leaking (or touching) another company's rows.
   */
  async getEnvironment(companyId: string, id: string): Promise<Environment> {
    const company = parse(ExternalId, companyId, 'companyId');
    parse(Uuid, id, 'id');
    const env = await this.store.getEnvironment(company, id);
    if (!env) throw new NotFoundError(`environment ${id} of company ${company} not found`);
    return env;
  }

  async updateEnvironment(
    companyId: string, id: string, patch: { config?: unknown; name?: string; description?: string | null },
  ): Promise<Environment> {
    const current = await this.getEnvironment(companyId, id);
    const name = patch.name === undefined ? undefined : parse(DisplayName, patch.name, 'name');
    const config = patch.config === undefined ? undefined : this.validateEnvironmentConfig(current.driver, patch.config);
    const updated = await this.store.updateEnvironment(current.id, { config, name, description: patch.description });
    return updated!;
  }

  /**
   * Archives an environment: no new run can lease it, and its active leases are released through their
   * provider before this returns (a running run is cancelled and releases its own; an orphan is reaped).
   */
  async archiveEnvironment(companyId: string, id: string): Promise<Environment> {
    const current = await this.getEnvironment(companyId, id);
    const archived = (await this.store.updateEnvironment(current.id, { status: 'archived' }))!;
    for (const lease of await this.store.listLeasesOfEnvironment(current.id, ['active'])) {
      const handle = lease.heartbeatRunId ? this.temporal.workflow.getHandle(runWorkflowId(lease.companyId, lease.heartbeatRunId)) : null;
      const running = handle ? await handle.describe().then((d) => d.status.name === 'RUNNING', () => false) : false;
      if (running && handle) {
        await handle.cancel();
        await handle.result().catch(() => undefined);
      } else {
        await releaseOrphanLease({ store: this.store, drivers: this.drivers }, lease, `environment ${current.id} archived`);
      }
    }
    return archived;
  }

  /** Creates the reaper's schedule (the worker does this at start unless ENVRUN_REAPER_EVERY=off). */
  async installReaper(every = '5m'): Promise<boolean> {
    return installReaperSchedule(this.temporal, this.taskQueue, every);
  }

  /** Runs one sweep now, on the worker, and returns what it released. */
  async reaperRunOnce(): Promise<ReapedLease[]> {
    return this.temporal.workflow.execute('reaper', { taskQueue: this.taskQueue, workflowId: `envrun-reaper-manual-${Date.now()}`, args: [] });
  }

  /**
   * Persists an execution workspace; its runtime config goes to `metadata.config`. The input is parsed
   * first (the message names the field) and `config.environmentId` must be one of the company's
   * environments: on bad input nothing is written.
   */
  async createExecutionWorkspace(input: NewExecutionWorkspaceInput): Promise<ExecutionWorkspace> {
    const { companyId, name, cwd, config } = parse(NewExecutionWorkspaceSchema, input, '');
    const environmentId = config?.environmentId;
    if (environmentId && !(await this.store.getEnvironment(companyId, environmentId))) {
      // Another company's environment reads as a missing one.
      throw new InvalidInputError(`config.environmentId: environment ${environmentId} of company ${companyId} not found`);
    }
    return this.store.createExecutionWorkspace({ companyId, name, cwd, metadata: config ? { config } : null });
  }

  /** Runs the environment's probe (driver, provider) and returns its diagnostics. */
  async probeEnvironment(companyId: string, id: string): Promise<ProbeResult> {
    const environment = await this.getEnvironment(companyId, id);
    const driver = this.drivers[environment.driver];
    if (!driver) return { ok: false, diagnostics: [`driver ${environment.driver} is not available in this process`] };
    if (!driver.probe) return { ok: true, diagnostics: [`driver ${environment.driver} has nothing to probe`] };
    return driver.probe(environment);
  }

  /**
   * Releases a lease kept by `retain_on_failure` once it has been inspected: its provider resource is
   * destroyed, the lease becomes `released`, and `environment.lease_released` is logged.
   */
  async releaseRetainedLease(companyId: string, leaseId: string): Promise<EnvironmentLease> {
    parse(ExternalId, companyId, 'companyId');
    parse(Uuid, leaseId, 'leaseId');
    const lease = await this.store.getLease(companyId, leaseId);
    if (!lease) throw new NotFoundError(`lease ${leaseId} of company ${companyId} not found`);
    if (lease.status !== 'retained') throw new RunStateError(`lease ${leaseId} is ${lease.status}, not retained`);
    const environment = await this.store.getEnvironment(companyId, lease.environmentId);
    const driver = environment ? this.drivers[environment.driver] : undefined;
    let cleanupError: string | null = null;
    try {
      if (!environment || !driver) throw new Error(`environment ${lease.environmentId} cannot be reached from this process`);
      await driver.release({ attempt: 1, idempotencyKey: `lease-release/${leaseId}` }, { environment, lease, keep: false });
    } catch (err) {
      cleanupError = (err as Error).message;
    }
    const released = (await this.store.updateLease(leaseId, {
      status: 'released', releasedAt: new Date(), cleanupStatus: cleanupError ? 'failed' : 'success',
    }))!;
    await this.store.logActivity({
      eventKey: `lease-release/${leaseId}/${ACTIVITY_ACTIONS.leaseReleased}`, companyId, actorType: 'operator', actorId: 'envrun-cli',
      action: ACTIVITY_ACTIONS.leaseReleased, entityType: 'environment_lease', entityId: leaseId, agentId: null,
      runId: lease.heartbeatRunId, details: { environmentId: lease.environmentId, status: 'released', cleanupStatus: released.cleanupStatus, outcome: 'retained_release', cleanupError },
    });
    if (cleanupError) throw new Error(`lease ${leaseId} released but its resource could not be destroyed: ${cleanupError}`);
    return released;
  }

  async listLeases(companyId: string, status?: string): Promise<EnvironmentLease[]> {
    const parsedStatus: LeaseStatus | undefined = status === undefined ? undefined : parse(LeaseStatusSchema, status, 'status');
    return this.store.listLeases(parse(ExternalId, companyId, 'companyId'), parsedStatus);
  }
}

