// Queries over the envrun tables. Every read is scoped by company; rows leave as contract records.
import { and, asc, desc, eq, inArray, isNull, ne, sql } from 'drizzle-orm';
import type {
  ActivityLogEntry,
  CleanupStatus,
  Driver,
  Environment,
  EnvironmentLease,
  EnvironmentStatus,
  ExecutionWorkspace,
  LeasePolicy,
  LeaseStatus,
  WorkspaceRealizationRecord,
  WorkspaceRealizationRequest,
} from '../contracts/index.js';
import type { Db } from './db.js';
import { activityLog, environmentLeases, environments, executionWorkspaces } from './schema.js';

const iso = (d: Date) => d.toISOString();
const isoOrNull = (d: Date | null) => (d ? d.toISOString() : null);

type EnvRow = typeof environments.$inferSelect;
type LeaseRow = typeof environmentLeases.$inferSelect;
type WsRow = typeof executionWorkspaces.$inferSelect;
type LogRow = typeof activityLog.$inferSelect;

export function toEnvironment(r: EnvRow): Environment {
  return {
    id: r.id,
    companyId: r.companyId,
    name: r.name,
    description: r.description,
    driver: r.driver as Driver,
    status: r.status as EnvironmentStatus,
    config: r.config,
    metadata: r.metadata ?? null,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

export function toLease(r: LeaseRow): EnvironmentLease {
  return {
    id: r.id,
    companyId: r.companyId,
    environmentId: r.environmentId,
    executionWorkspaceId: r.executionWorkspaceId,
    issueId: r.issueId,
    heartbeatRunId: r.heartbeatRunId,
    status: r.status as LeaseStatus,
    leasePolicy: r.leasePolicy as LeasePolicy,
    provider: r.provider,
    providerLeaseId: r.providerLeaseId,
    acquiredAt: iso(r.acquiredAt),
    lastUsedAt: iso(r.lastUsedAt),
    expiresAt: isoOrNull(r.expiresAt),
    releasedAt: isoOrNull(r.releasedAt),
    failureReason: r.failureReason,
    cleanupStatus: (r.cleanupStatus as CleanupStatus | null) ?? null,
    metadata: r.metadata ?? null,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

export function toExecutionWorkspace(r: WsRow): ExecutionWorkspace {
  return {
    id: r.id,
    companyId: r.companyId,
    projectId: r.projectId,
    projectWorkspaceId: r.projectWorkspaceId,
    sourceIssueId: r.sourceIssueId,
    mode: r.mode,
    strategyType: r.strategyType,
    name: r.name,
    status: r.status,
    cwd: r.cwd,
    repoUrl: r.repoUrl,
    baseRef: r.baseRef,
    branchName: r.branchName,
    providerType: r.providerType,
    providerRef: r.providerRef,
    derivedFromExecutionWorkspaceId: r.derivedFromExecutionWorkspaceId,
    lastUsedAt: iso(r.lastUsedAt),
    openedAt: iso(r.openedAt),
    closedAt: isoOrNull(r.closedAt),
    cleanupEligibleAt: isoOrNull(r.cleanupEligibleAt),
    cleanupReason: r.cleanupReason,
    config: r.config ?? null,
    metadata: r.metadata ?? null,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

export function toActivityLogEntry(r: LogRow): ActivityLogEntry {
  return {
    id: r.id,
    companyId: r.companyId,
    actorType: r.actorType,
    actorId: r.actorId,
    action: r.action,
    entityType: r.entityType,
    entityId: r.entityId,
    agentId: r.agentId,
    runId: r.runId,
    details: r.details ?? null,
    createdAt: iso(r.createdAt),
  };
}

export interface NewEnvironment {
  companyId: string;
  name: string;
  description?: string | null;
  driver: Driver;
  config: Record<string, unknown>;
  metadata?: Record<string, unknown> | null;
}

export interface NewLease {
  companyId: string;
  environmentId: string;
  executionWorkspaceId: string | null;
  issueId: string | null;
  heartbeatRunId: string;
  leasePolicy: LeasePolicy;
  provider: string | null;
  metadata: Record<string, unknown> | null;
  expiresAt: Date | null;
}

export interface NewActivity {
  eventKey: string;
  companyId: string;
  actorType: string;
  actorId: string;
  action: string;
  entityType: string;
  entityId: string;
  agentId: string | null;
  runId: string | null;
  details: Record<string, unknown>;
}

export interface NewExecutionWorkspace {
  companyId: string;
  name: string;
  cwd: string;
  projectId?: string | null;
  strategyType?: string;
  repoUrl?: string | null;
  baseRef?: string | null;
  branchName?: string | null;
  metadata?: Record<string, unknown> | null;
}

/** Postgres unique_violation, with the constraint that raised it. */
export function uniqueViolation(err: unknown): string | null {
  const e = err as { code?: string; constraint?: string; cause?: { code?: string; constraint?: string } };
  const pgErr = e?.code ? e : e?.cause;
  return pgErr?.code === '23505' ? (pgErr.constraint ?? 'unique') : null;
}

export class Store {
  constructor(readonly db: Db) {}

  // ---- environments -------------------------------------------------------------------------------
  async createEnvironment(input: NewEnvironment): Promise<Environment> {
    const [row] = await this.db
      .insert(environments)
      .values({
        companyId: input.companyId,
        name: input.name,
        description: input.description ?? null,
        driver: input.driver,
        config: input.config,
        metadata: input.metadata ?? null,
      })
      .returning();
    return toEnvironment(row!);
  }

  async getEnvironment(companyId: string, id: string): Promise<Environment | null> {
    const rows = await this.db
      .select()
      .from(environments)
      .where(and(eq(environments.id, id), eq(environments.companyId, companyId)));
    return rows[0] ? toEnvironment(rows[0]) : null;
  }

  /** Unscoped lookup, for operator commands that are given only an id. */
  async getEnvironmentById(id: string): Promise<Environment | null> {
    const rows = await this.db.select().from(environments).where(eq(environments.id, id));
    return rows[0] ? toEnvironment(rows[0]) : null;
  }

  async listEnvironments(companyId: string): Promise<Environment[]> {
    const rows = await this.db
      .select()
      .from(environments)
      .where(eq(environments.companyId, companyId))
      .orderBy(asc(environments.createdAt));
    return rows.map(toEnvironment);
  }

  async updateEnvironment(
    id: string,
    patch: { name?: string; description?: string | null; config?: Record<string, unknown>; status?: EnvironmentStatus },
  ): Promise<Environment | null> {
    const [row] = await this.db
      .update(environments)
      .set({ ...patch, updatedAt: new Date() })
      .where(eq(environments.id, id))
      .returning();
    return row ? toEnvironment(row) : null;
  }

  /** The company's local environment, created on first use; safe under concurrent callers. */
  async ensureLocalEnvironment(companyId: string): Promise<Environment> {
    await this.db
      .insert(environments)
      .values({
        companyId,
        name: 'Local',
        driver: 'local',
        config: {},
        description: 'This machine (created on demand)',
      })
      .onConflictDoNothing({ target: environments.companyId, where: sql`driver = 'local'` });
    const rows = await this.db
      .select()
      .from(environments)
      .where(and(eq(environments.companyId, companyId), eq(environments.driver, 'local')));
    return toEnvironment(rows[0]!);
  }

  // ---- execution workspaces -----------------------------------------------------------------------
  async createExecutionWorkspace(input: NewExecutionWorkspace): Promise<ExecutionWorkspace> {
    const [row] = await this.db
      .insert(executionWorkspaces)
      .values({
        companyId: input.companyId,
        name: input.name,
        cwd: input.cwd,
        projectId: input.projectId ?? null,
        strategyType: input.strategyType ?? 'project_primary',
        repoUrl: input.repoUrl ?? null,
        baseRef: input.baseRef ?? null,
        branchName: input.branchName ?? null,
        metadata: input.metadata ?? null,
      })
      .returning();
    return toExecutionWorkspace(row!);
  }

  async getExecutionWorkspace(companyId: string, id: string): Promise<ExecutionWorkspace | null> {
    const rows = await this.db
      .select()
      .from(executionWorkspaces)
      .where(and(eq(executionWorkspaces.id, id), eq(executionWorkspaces.companyId, companyId)));
    return rows[0] ? toExecutionWorkspace(rows[0]) : null;
  }

  // ---- leases -------------------------------------------------------------------------------------
  /** The run's current lease: one lost with its host does not count (the run was placed again). */
  async findRunLease(companyId: string, heartbeatRunId: string): Promise<EnvironmentLease | null> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(
        and(
          eq(environmentLeases.companyId, companyId),
          eq(environmentLeases.heartbeatRunId, heartbeatRunId),
          ne(environmentLeases.status, 'lost'),
        ),
      );
    return rows[0] ? toLease(rows[0]) : null;
  }

  async listRunLeases(companyId: string, heartbeatRunId: string): Promise<EnvironmentLease[]> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(and(eq(environmentLeases.companyId, companyId), eq(environmentLeases.heartbeatRunId, heartbeatRunId)))
      .orderBy(asc(environmentLeases.createdAt));
    return rows.map(toLease);
  }

  async getLease(companyId: string, id: string): Promise<EnvironmentLease | null> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(and(eq(environmentLeases.id, id), eq(environmentLeases.companyId, companyId)));
    return rows[0] ? toLease(rows[0]) : null;
  }

  /** The active lease holding an execution workspace under single flight, if any. */
  async findActiveWorkspaceLease(executionWorkspaceId: string): Promise<EnvironmentLease | null> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(
        and(
          eq(environmentLeases.executionWorkspaceId, executionWorkspaceId),
          eq(environmentLeases.status, 'active'),
          eq(environmentLeases.leasePolicy, 'ephemeral'),
        ),
      );
    return rows[0] ? toLease(rows[0]) : null;
  }

  /** Inserts the run's lease; throws a unique violation when the run or the workspace already has one. */
  async insertLease(input: NewLease): Promise<EnvironmentLease> {
    const [row] = await this.db
      .insert(environmentLeases)
      .values({
        companyId: input.companyId,
        environmentId: input.environmentId,
        executionWorkspaceId: input.executionWorkspaceId,
        issueId: input.issueId,
        heartbeatRunId: input.heartbeatRunId,
        leasePolicy: input.leasePolicy,
        provider: input.provider,
        metadata: input.metadata,
        expiresAt: input.expiresAt,
        status: 'active',
      })
      .returning();
    return toLease(row!);
  }

  async updateLease(
    id: string,
    patch: Partial<{
      status: LeaseStatus;
      provider: string | null;
      providerLeaseId: string | null;
      releasedAt: Date | null;
      failureReason: string | null;
      cleanupStatus: CleanupStatus | null;
      expiresAt: Date | null;
      lastUsedAt: Date;
      metadata: Record<string, unknown> | null;
    }>,
    /** Only if the row still has these values (a compare-and-set); null otherwise. */
    expected: { status?: LeaseStatus; cleanupStatus?: CleanupStatus | null } = {},
    /** The activity-log row of this change, written in the same transaction (only if the row changed). */
    log?: NewActivity,
  ): Promise<EnvironmentLease | null> {
    const conds = [eq(environmentLeases.id, id)];
    if (expected.status) conds.push(eq(environmentLeases.status, expected.status));
    if (expected.cleanupStatus !== undefined) {
      conds.push(
        expected.cleanupStatus === null
          ? isNull(environmentLeases.cleanupStatus)
          : eq(environmentLeases.cleanupStatus, expected.cleanupStatus),
      );
    }
    const update = (db: Pick<typeof this.db, 'update'>) =>
      db
        .update(environmentLeases)
        .set({ ...patch, updatedAt: new Date() })
        .where(and(...conds))
        .returning();
    if (!log) {
      const [row] = await update(this.db);
      return row ? toLease(row) : null;
    }
    return this.db.transaction(async (tx) => {
      const [row] = await update(tx);
      if (row) await tx.insert(activityLog).values(log).onConflictDoNothing({ target: activityLog.eventKey });
      return row ? toLease(row) : null;
    });
  }

  /** Merges keys into a lease's metadata (jsonb ||), returning the stored row. */
  async mergeLeaseMetadata(id: string, patch: Record<string, unknown>): Promise<EnvironmentLease | null> {
    const [row] = await this.db
      .update(environmentLeases)
      .set({
        metadata: sql`coalesce(${environmentLeases.metadata}, '{}'::jsonb) || ${JSON.stringify(patch)}::jsonb`,
        updatedAt: new Date(),
      })
      .where(eq(environmentLeases.id, id))
      .returning();
    return row ? toLease(row) : null;
  }

  async listLeases(companyId: string, status?: LeaseStatus): Promise<EnvironmentLease[]> {
    const where = status
      ? and(eq(environmentLeases.companyId, companyId), eq(environmentLeases.status, status))
      : eq(environmentLeases.companyId, companyId);
    const rows = await this.db.select().from(environmentLeases).where(where).orderBy(desc(environmentLeases.createdAt));
    return rows.map(toLease);
  }

  async listActiveLeases(): Promise<EnvironmentLease[]> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(eq(environmentLeases.status, 'active'))
      .orderBy(asc(environmentLeases.createdAt));
    return rows.map(toLease);
  }

  /**
   * Leases whose run ended but whose provider resource was never freed (cleanup failed or cut short), and
   * leases lost with their host (freed once it is back).
   */
  async listUnfinishedCleanups(): Promise<EnvironmentLease[]> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(
        and(
          inArray(environmentLeases.status, ['released', 'failed', 'expired', 'lost']),
          inArray(environmentLeases.cleanupStatus, ['failed', 'pending']),
        ),
      )
      .orderBy(asc(environmentLeases.createdAt));
    return rows.map(toLease);
  }

  async listLeasesOfEnvironment(environmentId: string, statuses: LeaseStatus[]): Promise<EnvironmentLease[]> {
    const rows = await this.db
      .select()
      .from(environmentLeases)
      .where(and(eq(environmentLeases.environmentId, environmentId), inArray(environmentLeases.status, statuses)));
    return rows.map(toLease);
  }

  /**
   * Step 4 of a run, in one transaction: the lease gains `workspaceRealization`, the execution workspace
   * gains `workspaceRealizationRequest` and `workspaceRealization`. Returns the stored rows.
   */
  async persistRealization(input: {
    leaseId: string;
    companyId: string;
    executionWorkspaceId: string | null;
    request: WorkspaceRealizationRequest;
    record: WorkspaceRealizationRecord;
    expiresAt?: Date | undefined;
    /** The activity-log row of the realization, written in the same transaction. */
    log?: NewActivity;
  }): Promise<{ lease: EnvironmentLease; executionWorkspace: ExecutionWorkspace | null }> {
    return this.db.transaction(async (tx) => {
      if (input.log)
        await tx.insert(activityLog).values(input.log).onConflictDoNothing({ target: activityLog.eventKey });
      const leasePatch = JSON.stringify({ workspaceRealization: input.record });
      const [lease] = await tx
        .update(environmentLeases)
        .set({
          metadata: sql`coalesce(${environmentLeases.metadata}, '{}'::jsonb) || ${leasePatch}::jsonb`,
          updatedAt: new Date(),
          ...(input.expiresAt ? { expiresAt: input.expiresAt, lastUsedAt: new Date() } : {}),
        })
        .where(and(eq(environmentLeases.id, input.leaseId), eq(environmentLeases.companyId, input.companyId)))
        .returning();
      if (!lease) throw new Error(`lease ${input.leaseId} not found`);
      let ws: WsRow | undefined;
      if (input.executionWorkspaceId) {
        const wsPatch = JSON.stringify({
          workspaceRealizationRequest: input.request,
          workspaceRealization: input.record,
        });
        [ws] = await tx
          .update(executionWorkspaces)
          .set({
            metadata: sql`coalesce(${executionWorkspaces.metadata}, '{}'::jsonb) || ${wsPatch}::jsonb`,
            lastUsedAt: new Date(),
            updatedAt: new Date(),
          })
          .where(
            and(
              eq(executionWorkspaces.id, input.executionWorkspaceId),
              eq(executionWorkspaces.companyId, input.companyId),
            ),
          )
          .returning();
        if (!ws) throw new Error(`execution workspace ${input.executionWorkspaceId} not found`);
      }
      return { lease: toLease(lease), executionWorkspace: ws ? toExecutionWorkspace(ws) : null };
    });
  }

  // ---- activity log -------------------------------------------------------------------------------
  /** Writes the entry once: a second write of the same event key is a no-op. Returns whether it wrote. */
  async logActivity(entry: NewActivity): Promise<boolean> {
    const rows = await this.db
      .insert(activityLog)
      .values(entry)
      .onConflictDoNothing({ target: activityLog.eventKey })
      .returning({ id: activityLog.id });
    return rows.length > 0;
  }

  async listActivity(companyId: string, filter: { runId?: string; action?: string } = {}): Promise<ActivityLogEntry[]> {
    const conds = [eq(activityLog.companyId, companyId)];
    if (filter.runId) conds.push(eq(activityLog.runId, filter.runId));
    if (filter.action) conds.push(eq(activityLog.action, filter.action));
    const rows = await this.db
      .select()
      .from(activityLog)
      .where(and(...conds))
      .orderBy(asc(activityLog.createdAt));
    return rows.map(toActivityLogEntry);
  }
}
