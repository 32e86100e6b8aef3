// EnvRunAdmin: administration of what runs use: environments, execution workspaces and leases, in the
// database, plus the calls that need an environment's driver in this process (probe, exec, releasing a
// retained or orphaned lease). Runs themselves go through `admin.runs`, the Temporal-only EnvRunClient.
// Every input is parsed here, once, before anything is written.
import {
  checkEnabled,
  checkSecretGrant,
  checkEgressGrants,
  checkMountSources,
  checkWorkspacePath,
  loadTenancy,
  TenancyError,
  type Tenancy,
} from '../config/tenancy.js';
import { providerOf } from '../contracts/lease-policy.js';
import { createDrivers, type DriverRegistry } from '../drivers/registry.js';
import { loadProviders } from '../drivers/providers/load.js';
import { loadPlugins } from '../drivers/plugins/load.js';
import type { ProbeResult } from '../drivers/providers/contract.js';
import type { ReleasedLease } from '../leases/release.js';
import type { DestroyedResource } from '../leases/destroy.js';
import type { LeaseOperation } from '../activities/lease-operation.js';
import { randomUUID } from 'node:crypto';
import { openDatabase, resolveDatabaseUrl, type Database } from '../store/db.js';
import { Store, toCommandSummary, type EgressAuditEntry } from '../store/store.js';
import {
  ACTIVITY_ACTIONS,
  DRIVER_CONFIG_SCHEMAS,
  DisplayName,
  DriverSchema,
  ExecRequestSchema,
  ExternalId,
  LeaseStatusSchema,
  NewExecutionWorkspaceSchema,
  Uuid,
  runWorkflowId,
  POOL_WORKFLOW_TYPE,
  getPoolQuery,
  poolChangedSignal,
  poolWorkflowId,
  type PoolState,
  type WarmPool,
  type Driver,
  type Environment,
  type EnvironmentLease,
  type ExecRequest,
  type CommandEvent,
  type CommandOutcome,
  type CommandSummary,
  type ExecutionWorkspace,
  type LeaseStatus,
  type NewExecutionWorkspaceInput,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { loadClientConfig, type ClientConfig } from './config.js';
import { InvalidInputError, NotFoundError, RunStateError, fromTemporal, parseInput as parse } from './errors.js';
import { EnvRunClient } from './runs.js';
import * as commands from './commands.js';
import type { StreamCommandOptions } from './commands.js';
import type { Writable } from 'node:stream';

/** What archiving did with the provider resources the environment's leases kept. */
export type { EgressAuditEntry };

export interface KeptResourcesDestroyed {
  destroyed: number;
  /** Left for the reaper, which tries again every sweep. */
  failed: number;
  /** A live run (of another environment sharing it) holds the resource: not destroyed. */
  skippedLive: number;
  failures: Array<{ leaseId: string; providerLeaseId: string | null; error: string }>;
}

export type ArchivedEnvironment = Environment & { keptResources: KeptResourcesDestroyed };

export interface EnvRunAdminOptions {
  /** The runs client: exec reads the run from it, archiving cancels the environment's running runs through it. */
  runs: EnvRunClient;
  store: Store;
  drivers: DriverRegistry;
  /** The deployment's tenancy settings; read from the environment when absent. */
  tenancy?: Tenancy;
  onClose?: () => Promise<void>;
}

export class EnvRunAdmin {
  readonly runs: EnvRunClient;
  readonly store: Store;
  private readonly drivers: DriverRegistry;
  private readonly tenancy: Tenancy;
  private readonly onClose?: () => Promise<void>;

  constructor(options: EnvRunAdminOptions) {
    this.runs = options.runs;
    this.store = options.store;
    this.drivers = options.drivers;
    this.tenancy = options.tenancy ?? loadTenancy();
    this.onClose = options.onClose;
  }

  /**
   * Opens the database (DATABASE_URL, or the embedded store of ENVRUN_DATA_DIR), loads the providers and the
   * plugins and connects the runs client, all with the worker's configuration. `close()` closes both.
   */
  static async connect(config: ClientConfig = loadClientConfig()): Promise<EnvRunAdmin> {
    const providers = await loadProviders(config);
    let database: Database;
    let plugins: Awaited<ReturnType<typeof loadPlugins>>;
    let runs: EnvRunClient;
    try {
      plugins = await loadPlugins(config);
      const url = await resolveDatabaseUrl({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
      database = await openDatabase(url, 4);
    } catch (err) {
      await providers.close(); // the Paperclip plugins' worker processes
      throw err;
    }
    try {
      runs = await EnvRunClient.connect(config);
    } catch (err) {
      await database.close();
      await providers.close();
      throw err;
    }
    return new EnvRunAdmin({
      runs,
      store: new Store(database.db),
      drivers: createDrivers(providers, plugins),
      tenancy: loadTenancy(process.env, config.dataDir),
      onClose: async () => {
        await runs.close();
        await database.close();
        await providers.close();
      },
    });
  }

  /** Closes what `connect` opened; an admin built from its parts leaves them to their owner. */
  async close(): Promise<void> {
    await this.onClose?.();
  }

  // ---- environments --------------------------------------------------------------------------------
  /**
   * Validates a driver config: the driver's schema, then its provider's, naming the bad field. Returns the
   * config as the driver (and a sandbox provider loaded here) normalized it: what is stored.
   */
  async validateEnvironmentConfig(driver: Driver, config: unknown): Promise<Record<string, unknown>> {
    const parsed = parse(DRIVER_CONFIG_SCHEMAS[driver], config ?? {}, 'config') as Record<string, unknown>;
    const impl = this.drivers[driver];
    if (impl) {
      try {
        return await impl.validateConfig(parsed);
      } catch (err) {
        throw new InvalidInputError((err as Error).message);
      }
    }
    return parsed;
  }

  /**
   * The deployment's rules: the driver and provider are enabled, the secret references (an SSH key, a
   * sandbox's injected egress headers) are granted, a sandbox's read-only mounts are inside the company's
   * workspace roots.
   */
  private checkTenancy(companyId: string, driver: Driver, config: Record<string, unknown>): void {
    try {
      checkEnabled(this.tenancy, driver, providerOf(driver, config));
      if (typeof config.privateKeySecretRef === 'string') {
        checkSecretGrant(this.tenancy, companyId, config.privateKeySecretRef, 'config.privateKeySecretRef');
      }
      if (driver === 'sandbox' && config.mounts !== undefined)
        checkMountSources(this.tenancy, companyId, config.mounts);
      if (driver === 'sandbox') checkEgressGrants(this.tenancy, companyId, config);
      const pool = config.warmPool as WarmPool | undefined;
      if (pool) checkWorkspacePath(this.tenancy, companyId, pool.base.cwd, 'config.warmPool.base.cwd');
    } catch (err) {
      if (err instanceof TenancyError) throw new InvalidInputError(err.message);
      throw err;
    }
  }

  async createEnvironment(input: {
    companyId: string;
    name: string;
    driver: string;
    config?: unknown;
    description?: string | null;
  }): Promise<Environment> {
    const companyId = parse(ExternalId, input.companyId, 'companyId');
    const driver = parse(DriverSchema, input.driver, 'driver');
    const name = parse(DisplayName, input.name, 'name');
    const config = await this.validateEnvironmentConfig(driver, input.config);
    this.checkTenancy(companyId, driver, config);
    if (driver === 'local' && (await this.store.listEnvironments(companyId)).some((e) => e.driver === 'local')) {
      throw new InvalidInputError(`driver: company ${companyId} already has a local environment`);
    }
    const created = await this.store.createEnvironment({
      companyId,
      name,
      driver,
      config,
      description: input.description ?? null,
    });
    await this.tellPool(created);
    return created;
  }

  /**
   * Starts the environment's warm pool workflow when its config has one, or tells the running one to look
   * again (its config changed, it was archived); one workflow per environment, whatever the calls.
   */
  private async tellPool(environment: Environment): Promise<void> {
    const workflowId = poolWorkflowId(environment.companyId, environment.id);
    if (environment.config.warmPool && environment.status === 'active') {
      await this.runs.temporal.workflow.signalWithStart(POOL_WORKFLOW_TYPE, {
        workflowId,
        taskQueue: this.runs.taskQueue,
        args: [{ companyId: environment.companyId, environmentId: environment.id }],
        signal: poolChangedSignal,
        signalArgs: [],
      });
      return;
    }
    // No pool (any more): a running one retires its sandboxes and ends; none running is fine.
    await this.runs.temporal.workflow
      .getHandle(workflowId)
      .signal(poolChangedSignal)
      .catch(() => undefined);
  }

  /** The environment's warm pool as its workflow sees it (members, fingerprint, counts); null when none runs. */
  async getPool(companyId: string, id: string): Promise<PoolState | null> {
    const environment = await this.getEnvironment(companyId, id);
    return this.runs.temporal.workflow
      .getHandle(poolWorkflowId(environment.companyId, environment.id))
      .query(getPoolQuery)
      .catch(() => null);
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
    companyId: string,
    id: string,
    patch: { config?: unknown; name?: string; description?: string | null },
  ): Promise<Environment> {
    const current = await this.getEnvironment(companyId, id);
    const name = patch.name === undefined ? undefined : parse(DisplayName, patch.name, 'name');
    const config =
      patch.config === undefined ? undefined : await this.validateEnvironmentConfig(current.driver, patch.config);
    if (config) this.checkTenancy(current.companyId, current.driver, config);
    const updated = await this.store.updateEnvironment(current.id, { config, name, description: patch.description });
    if (config && (config.warmPool || current.config.warmPool)) await this.tellPool(updated!);
    return updated!;
  }

  /**
   * Archives an environment: no new run can lease it, its active leases are released through their provider
   * (a running run is cancelled and releases its own; an orphan is reaped), and then every provider
   * resource its leases kept (reuse, retention) is destroyed, one by one, unless a live run holds it, all
   * before this returns. `keptResources` counts them; what failed is left to the reaper.
   */
  async archiveEnvironment(companyId: string, id: string): Promise<ArchivedEnvironment> {
    const current = await this.getEnvironment(companyId, id);
    const archived = (await this.store.updateEnvironment(current.id, { status: 'archived' }))!;
    if (current.config.warmPool) await this.tellPool(archived);
    for (const lease of await this.store.listLeasesOfEnvironment(current.id, ['active'])) {
      const handle = lease.heartbeatRunId
        ? this.runs.temporal.workflow.getHandle(runWorkflowId(lease.companyId, lease.heartbeatRunId))
        : null;
      const running = handle
        ? await handle.describe().then(
            (d) => d.status.name === 'RUNNING',
            () => false,
          )
        : false;
      if (running && handle) {
        await handle.cancel();
        await handle.result().catch(() => undefined);
      } else {
        const reason = `environment ${current.id} archived`;
        await this.onLeaseHost(lease, { kind: 'releaseOrphan', companyId: lease.companyId, leaseId: lease.id, reason });
      }
    }
    return { ...archived, keptResources: await this.destroyKeptResources(archived) };
  }

  /** Destroys each provider resource the environment's leases kept, once, through its newest lease's host. */
  private async destroyKeptResources(environment: Environment): Promise<KeptResourcesDestroyed> {
    const counts: KeptResourcesDestroyed = { destroyed: 0, failed: 0, skippedLive: 0, failures: [] };
    if (!this.drivers[environment.driver]?.destroy) return counts; // this driver keeps nothing to destroy
    const seen = new Set<string>();
    const kept = await this.store.listKeptLeases({ environmentId: environment.id, drivers: [environment.driver] });
    for (const lease of kept) {
      const resource = `${lease.provider}\n${lease.providerLeaseId}`;
      if (seen.has(resource)) continue;
      seen.add(resource);
      const operation = {
        kind: 'destroyKept' as const,
        companyId: lease.companyId,
        leaseId: lease.id,
        reason: `environment ${environment.id} archived`,
        cancelActiveWork: true,
      };
      let error: string;
      try {
        const done = await this.onLeaseHost<DestroyedResource>(lease, operation);
        if (done.outcome === 'destroyed') {
          counts.destroyed++;
          continue;
        }
        if (done.outcome === 'skipped_live') {
          counts.skippedLive++;
          continue;
        }
        error = done.error ?? 'destroy failed';
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
      counts.failed++;
      counts.failures.push({ leaseId: lease.id, providerLeaseId: lease.providerLeaseId, error });
    }
    return counts;
  }

  /** Runs the environment's probe (driver, provider) on a worker and returns its diagnostics. */
  async probeEnvironment(companyId: string, id: string): Promise<ProbeResult> {
    const environment = await this.getEnvironment(companyId, id);
    return this.onLeaseHost<ProbeResult>(null, { kind: 'probe', companyId, environmentId: environment.id });
  }

  // ---- execution workspaces ------------------------------------------------------------------------
  /**
   * Persists an execution workspace; its runtime config goes to `metadata.config`. The input is parsed
   * first (the message names the field), `cwd` must lie inside the company's workspace roots and
   * `config.environmentId` must be one of the company's environments: on bad input nothing is written.
   */
  async createExecutionWorkspace(input: NewExecutionWorkspaceInput): Promise<ExecutionWorkspace> {
    const { companyId, name, cwd, config } = parse(NewExecutionWorkspaceSchema, input, '');
    try {
      checkWorkspacePath(this.tenancy, companyId, cwd, 'cwd'); // inside the company's own workspace roots
    } catch (err) {
      if (err instanceof TenancyError) throw new InvalidInputError(err.message);
      throw err;
    }
    const environmentId = config?.environmentId;
    if (environmentId && !(await this.store.getEnvironment(companyId, environmentId))) {
      // Another company's environment reads as a missing one.
      throw new InvalidInputError(
        `config.environmentId: environment ${environmentId} of company ${companyId} not found`,
      );
    }
    return this.store.createExecutionWorkspace({ companyId, name, cwd, metadata: config ? { config } : null });
  }

  // ---- leases --------------------------------------------------------------------------------------
  async listLeases(companyId: string, status?: string): Promise<EnvironmentLease[]> {
    const parsedStatus: LeaseStatus | undefined =
      status === undefined ? undefined : parse(LeaseStatusSchema, status, 'status');
    return this.store.listLeases(parse(ExternalId, companyId, 'companyId'), parsedStatus);
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
    const released = await this.onLeaseHost<ReleasedLease>(lease, { kind: 'releaseRetained', companyId, leaseId });
    if (released.skipped) throw new RunStateError(`lease ${leaseId} is ${released.lease.status}, not retained`);
    if (released.error) {
      throw new Error(`lease ${leaseId} released but its resource could not be destroyed: ${released.error}`);
    }
    return released.lease;
  }

  /**
   * Runs one operation on a lease's resource through a worker: on the host that holds it when the lease is
   * host-bound (its host's queue), else on any worker. This process runs no driver for it.
   */
  private async onLeaseHost<T>(lease: EnvironmentLease | null, operation: LeaseOperation): Promise<T> {
    const hostId = typeof lease?.metadata?.hostId === 'string' ? lease.metadata.hostId : null;
    try {
      return (await this.runs.temporal.workflow.execute('leaseOperation', {
        taskQueue: this.runs.taskQueue,
        workflowId: `envrun-op/${operation.kind}/${randomUUID()}`,
        args: [{ ...operation, hostId }],
      })) as T;
    } catch (err) {
      // The operation's own error, not "workflow execution failed": the innermost failure says what happened.
      let cause: unknown = err;
      while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
      const mapped = fromTemporal(err, `${operation.kind} operation`);
      throw mapped !== err ? mapped : cause instanceof Error ? new Error(cause.message) : err;
    }
  }

  // ---- commands in a run's target ------------------------------------------------------------------
  /** Runs a command in a ready run's target, through the worker that holds it (see EnvRunClient.exec). */
  async exec(companyId: string, heartbeatRunId: string, input: ExecRequest): Promise<CommandOutcome> {
    return this.runs.exec(companyId, heartbeatRunId, input);
  }

  /**
   * A command's output from any point (`from`: after that sequence number), as the journal holds it: raw
   * chunks per stream, a `truncated` marker where the journal stopped keeping output, then its end. Follows
   * the command live until it ends (`follow: false`: only what is stored now). `commandId` null: the run's
   * latest command.
   */
  streamCommand(
    companyId: string,
    heartbeatRunId: string,
    commandId: string | null,
    options?: StreamCommandOptions,
  ): AsyncGenerator<CommandEvent> {
    return commands.streamCommand(this.store, companyId, heartbeatRunId, commandId, options);
  }

  /** The whole output the journal kept, per stream, and the command's summary (null while it runs). */
  commandOutput(companyId: string, heartbeatRunId: string, commandId: string) {
    return commands.commandOutput(this.store, companyId, heartbeatRunId, commandId);
  }

  /** One command's summary (`commandId` null: the run's latest). */
  async getCommand(companyId: string, heartbeatRunId: string, commandId: string | null): Promise<CommandSummary> {
    return toCommandSummary(await commands.commandRow(this.store, companyId, heartbeatRunId, commandId));
  }

  /** The run's commands, newest first, from the store (they outlive the run's workflow). */
  listCommands(companyId: string, heartbeatRunId: string): Promise<CommandSummary[]> {
    return commands.listCommands(this.store, companyId, heartbeatRunId);
  }

  /**
   * What the egress proxy let the run's sandboxes reach and what it refused, per lease phase, host, port,
   * verdict and reason, with connections and bytes (`network: "allowlist"`), from the store.
   */
  async listEgress(companyId: string, heartbeatRunId: string): Promise<EgressAuditEntry[]> {
    return this.store.listEgress(
      parse(ExternalId, companyId, 'companyId'),
      parse(ExternalId, heartbeatRunId, 'heartbeatRunId'),
    );
  }

  /** Sends `signal` (default SIGTERM) to a running command's whole process group. */
  killCommand(companyId: string, heartbeatRunId: string, commandId: string, signal?: string): Promise<CommandSummary> {
    return commands.killCommand(this.store, companyId, heartbeatRunId, commandId, signal);
  }

  /** A writable stream into the open stdin of a command started with `stdinStream: true`; end() closes it. */
  openStdin(companyId: string, heartbeatRunId: string, commandId: string): Promise<Writable> {
    return commands.openStdin(this.store, companyId, heartbeatRunId, commandId);
  }
}
