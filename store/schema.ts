// The database schema. Table and column names follow the control plane's own data model, so a control
// plane's own PostgreSQL can be pointed at envrun. Extra columns exist only for idempotency.
import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const environments = pgTable(
  'environments',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    companyId: text('company_id').notNull(),
    name: text('name').notNull(),
    description: text('description'),
    driver: text('driver').notNull(),
    status: text('status').notNull().default('active'),
    config: jsonb('config').$type<Record<string, unknown>>().notNull().default({}),
    metadata: jsonb('metadata').$type<Record<string, unknown>>(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    index('environments_company_idx').on(t.companyId),
    // At most one local environment per company ("ensure local environment" relies on it).
    uniqueIndex('environments_one_local_per_company')
      .on(t.companyId)
      .where(sql`driver = 'local'`),
  ],
);

export const executionWorkspaces = pgTable(
  'execution_workspaces',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    companyId: text('company_id').notNull(),
    projectId: text('project_id'),
    projectWorkspaceId: text('project_workspace_id'),
    sourceIssueId: text('source_issue_id'),
    mode: text('mode').notNull().default('standard'),
    strategyType: text('strategy_type').notNull().default('project_primary'),
    name: text('name').notNull(),
    status: text('status').notNull().default('open'),
    cwd: text('cwd'),
    repoUrl: text('repo_url'),
    baseRef: text('base_ref'),
    branchName: text('branch_name'),
    providerType: text('provider_type').notNull().default('local'),
    providerRef: text('provider_ref'),
    derivedFromExecutionWorkspaceId: uuid('derived_from_execution_workspace_id'),
    lastUsedAt: ts('last_used_at').notNull().defaultNow(),
    openedAt: ts('opened_at').notNull().defaultNow(),
    closedAt: ts('closed_at'),
    cleanupEligibleAt: ts('cleanup_eligible_at'),
    cleanupReason: text('cleanup_reason'),
    config: jsonb('config').$type<Record<string, unknown>>(),
    metadata: jsonb('metadata').$type<Record<string, unknown>>(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [index('execution_workspaces_company_idx').on(t.companyId)],
);

export const environmentLeases = pgTable(
  'environment_leases',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    companyId: text('company_id').notNull(),
    // RESTRICT: an environment cannot be deleted out from under its leases (they must be released first).
    environmentId: uuid('environment_id')
      .notNull()
      .references(() => environments.id, { onDelete: 'restrict' }),
    executionWorkspaceId: uuid('execution_workspace_id').references(() => executionWorkspaces.id, {
      onDelete: 'set null',
    }),
    issueId: text('issue_id'),
    heartbeatRunId: text('heartbeat_run_id'),
    status: text('status').notNull().default('active'),
    leasePolicy: text('lease_policy').notNull().default('ephemeral'),
    provider: text('provider'),
    providerLeaseId: text('provider_lease_id'),
    acquiredAt: ts('acquired_at').notNull().defaultNow(),
    lastUsedAt: ts('last_used_at').notNull().defaultNow(),
    expiresAt: ts('expires_at'),
    releasedAt: ts('released_at'),
    failureReason: text('failure_reason'),
    cleanupStatus: text('cleanup_status'),
    metadata: jsonb('metadata').$type<Record<string, unknown>>(),
    createdAt: ts('created_at').notNull().defaultNow(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    index('environment_leases_company_status_idx').on(t.companyId, t.status),
    index('environment_leases_environment_idx').on(t.environmentId),
    // A retried acquire can never write a second lease for the same run. A lease lost with its host does
    // not count: the run is placed again on a live host with a fresh lease.
    uniqueIndex('environment_leases_one_per_run')
      .on(t.companyId, t.heartbeatRunId)
      .where(sql`status <> 'lost'`),
    // Single flight: at most one active ephemeral lease per execution workspace.
    uniqueIndex('environment_leases_single_flight')
      .on(t.executionWorkspaceId)
      .where(sql`status = 'active' and lease_policy = 'ephemeral' and execution_workspace_id is not null`),
  ],
);

export const activityLog = pgTable(
  'activity_log',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    companyId: text('company_id').notNull(),
    actorType: text('actor_type').notNull(),
    actorId: text('actor_id').notNull(),
    action: text('action').notNull(),
    entityType: text('entity_type').notNull(),
    entityId: text('entity_id').notNull(),
    agentId: text('agent_id'),
    runId: text('run_id'),
    details: jsonb('details').$type<Record<string, unknown>>(),
    // Identifies the event (e.g. workflow id + action + lease): a retried log step writes nothing new.
    eventKey: text('event_key'),
    createdAt: ts('created_at').notNull().defaultNow(),
  },
  (t) => [
    index('activity_log_company_idx').on(t.companyId, t.createdAt),
    uniqueIndex('activity_log_event_key').on(t.eventKey),
  ],
);

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

/**
 * A command run in a run's target (see contracts/commands.ts). Keyed by the caller's id within its run;
 * `key` is what the journal's chunks and notifications name.
 */
export const commands = pgTable(
  'commands',
  {
    key: uuid('key').primaryKey().defaultRandom(),
    companyId: text('company_id').notNull(),
    heartbeatRunId: text('heartbeat_run_id').notNull(),
    commandId: text('command_id').notNull(),
    leaseId: uuid('lease_id'),
    /** The worker host running it (host-bound targets), for kill and stdin routing and for operators. */
    hostId: text('host_id'),
    command: text('command').notNull(),
    args: jsonb('args').$type<string[]>().notNull().default([]),
    status: text('status').notNull().default('running'),
    exitCode: integer('exit_code'),
    signal: text('signal'),
    timedOut: boolean('timed_out').notNull().default(false),
    stdoutBytes: bigint('stdout_bytes', { mode: 'number' }).notNull().default(0),
    stderrBytes: bigint('stderr_bytes', { mode: 'number' }).notNull().default(0),
    /** Bytes kept in the journal (both streams); at most the command's limit. */
    keptBytes: bigint('kept_bytes', { mode: 'number' }).notNull().default(0),
    truncated: boolean('truncated').notNull().default(false),
    /** A kill asked for and not yet delivered (the signal's name). */
    killSignal: text('kill_signal'),
    error: text('error'),
    startedAt: ts('started_at').notNull().defaultNow(),
    endedAt: ts('ended_at'),
  },
  (t) => [
    uniqueIndex('commands_run_command').on(t.companyId, t.heartbeatRunId, t.commandId),
    index('commands_run_started').on(t.companyId, t.heartbeatRunId, t.startedAt),
    index('commands_lease').on(t.leaseId),
  ],
);

/** A command's output, in order: `seq` counts from 1 per command; stream 1 stdout, 2 stderr, 3 truncated. */
export const commandOutput = pgTable(
  'command_output',
  {
    commandKey: uuid('command_key')
      .notNull()
      .references(() => commands.key, { onDelete: 'cascade' }),
    seq: integer('seq').notNull(),
    stream: smallint('stream').notNull(),
    data: bytea('data').notNull(),
  },
  (t) => [primaryKey({ columns: [t.commandKey, t.seq] })],
);

/** Input written to a command's open stdin (`stdinStream`), in order; an empty chunk with `eof` closes it. */
export const commandInput = pgTable(
  'command_input',
  {
    commandKey: uuid('command_key')
      .notNull()
      .references(() => commands.key, { onDelete: 'cascade' }),
    seq: integer('seq').notNull(),
    data: bytea('data').notNull(),
    eof: boolean('eof').notNull().default(false),
  },
  (t) => [primaryKey({ columns: [t.commandKey, t.seq] })],
);

/**
 * What a sandbox's egress proxy let through or refused (drivers/egress/): the connections of one lease's
 * phase to one host:port with one verdict and reason, summed. `reason` is '' when allowed (a key column).
 */
export const egressAudit = pgTable(
  'egress_audit',
  {
    companyId: text('company_id').notNull(),
    heartbeatRunId: text('heartbeat_run_id').notNull(),
    leaseId: text('lease_id').notNull(),
    environmentId: text('environment_id').notNull(),
    phase: text('phase').notNull(),
    host: text('host').notNull(),
    port: integer('port').notNull(),
    verdict: text('verdict').notNull(),
    reason: text('reason').notNull().default(''),
    connections: bigint('connections', { mode: 'number' }).notNull().default(0),
    bytesUp: bigint('bytes_up', { mode: 'number' }).notNull().default(0),
    bytesDown: bigint('bytes_down', { mode: 'number' }).notNull().default(0),
    firstAt: ts('first_at').notNull(),
    lastAt: ts('last_at').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.leaseId, t.phase, t.host, t.port, t.verdict, t.reason] }),
    index('egress_audit_run').on(t.companyId, t.heartbeatRunId),
  ],
);
