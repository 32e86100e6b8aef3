// Queries over environment leases, and the realization a run stores on its lease and workspace.
import { and, asc, desc, eq, getTableColumns, inArray, isNull, ne, sql } from 'drizzle-orm';
import type {
  CleanupStatus,
  EnvironmentLease,
  ExecutionWorkspace,
  LeasePolicy,
  LeaseStatus,
  WorkspaceRealizationRecord,
  WorkspaceRealizationRequest,
} from '../contracts/index.js';
import type { NewActivity } from './activity-log.js';
import { iso, isoOrNull, type QueryBase } from './base.js';
import { activityLog, environmentLeases, environments, executionWorkspaces } from './schema.js';
import { toExecutionWorkspace, type WsRow } from './workspaces.js';

type LeaseRow = typeof environmentLeases.$inferSelect;

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

/** A row as a raw statement returns it (column names; timestamps as Date, or as text from row_to_json). */
export function fromRaw<R>(table: Parameters<typeof getTableColumns>[0], raw: Record<string, unknown>): R {
  const row: Record<string, unknown> = {};
  for (const [key, column] of Object.entries(getTableColumns(table))) {
    const v = raw[column.name];
    row[key] = typeof v === 'string' && column.getSQLType().startsWith('timestamp') ? new Date(v) : v;
  }
  return row as R;
}
export const rawLease = (raw: Record<string, unknown>) => toLease(fromRaw<LeaseRow>(environmentLeases, raw));

/** Inserts the activity-log row only when the statement's CTE `changed` returned a row. */
function logIfChanged(log: NewActivity, changed: string) {
  return sql`insert into activity_log
      (company_id, actor_type, actor_id, action, entity_type, entity_id, agent_id, run_id, details, event_key)
    select ${log.companyId}, ${log.actorType}, ${log.actorId}, ${log.action}, ${log.entityType}, ${log.entityId},
      ${log.agentId ?? null}, ${log.runId ?? null}, ${JSON.stringify(log.details ?? null)}::jsonb, ${log.eventKey}
    where exists (select 1 from ${sql.raw(changed)})
    on conflict (event_key) do nothing`;
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

export function leaseQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
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
      // One statement, not a transaction of three: the log row is written only when the row changed.
      const r = await this.db.execute(sql`
        with changed as (${update(this.db).getSQL()}), logged as (${logIfChanged(log, 'changed')})
        select * from changed`);
      return r.rows[0] ? rawLease(r.rows[0]) : null;
    }

    /**
     * A release's last write, one statement: merges the provider's report into the metadata, sets the
     * cleanup status (null: leaves it) and writes the log row.
     */
    async finishCleanup(
      id: string,
      merge: Record<string, unknown>,
      cleanupStatus: CleanupStatus | null,
      log?: NewActivity,
    ): Promise<EnvironmentLease | null> {
      const update = this.db
        .update(environmentLeases)
        .set({
          metadata: sql`coalesce(${environmentLeases.metadata}, '{}'::jsonb) || ${JSON.stringify(merge)}::jsonb`,
          ...(cleanupStatus ? { cleanupStatus } : {}),
          updatedAt: new Date(),
        })
        .where(eq(environmentLeases.id, id))
        .returning();
      if (!log) {
        const [row] = await update;
        return row ? toLease(row) : null;
      }
      const r = await this.db.execute(sql`
        with changed as (${update.getSQL()}), logged as (${logIfChanged(log, 'changed')})
        select * from changed`);
      return r.rows[0] ? rawLease(r.rows[0]) : null;
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
      const rows = await this.db
        .select()
        .from(environmentLeases)
        .where(where)
        .orderBy(desc(environmentLeases.createdAt));
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

    /** The company's leases on one provider resource (a reused resource has one per run that held it). */
    async listResourceLeases(
      companyId: string,
      provider: string,
      providerLeaseId: string,
      statuses?: LeaseStatus[],
    ): Promise<EnvironmentLease[]> {
      const conds = [
        eq(environmentLeases.companyId, companyId),
        eq(environmentLeases.provider, provider),
        eq(environmentLeases.providerLeaseId, providerLeaseId),
      ];
      if (statuses) conds.push(inArray(environmentLeases.status, statuses));
      const rows = await this.db
        .select()
        .from(environmentLeases)
        .where(and(...conds))
        .orderBy(desc(environmentLeases.createdAt));
      return rows.map(toLease);
    }

    /**
     * Ended leases whose release kept their provider resource (`metadata.kept`), of one environment or of
     * every archived one, newest first. A lease released before envrun recorded `kept` counts when its
     * cleanup succeeded and its policy, status or environment (`reuseLease`) kept resources then.
     */
    async listKeptLeases(
      where: ({ environmentId: string } | { archived: true }) & {
        /** Only environments of these drivers (those that can destroy what they kept). */
        drivers: string[];
      },
    ): Promise<EnvironmentLease[]> {
      if (where.drivers.length === 0) return [];
      const rows = await this.db
        .select({ lease: environmentLeases })
        .from(environmentLeases)
        .innerJoin(environments, eq(environments.id, environmentLeases.environmentId))
        .where(
          and(
            'environmentId' in where
              ? eq(environmentLeases.environmentId, where.environmentId)
              : eq(environments.status, 'archived'),
            inArray(environments.driver, where.drivers),
            inArray(environmentLeases.status, ['released', 'expired', 'failed', 'retained']),
            sql`${environmentLeases.providerLeaseId} is not null`,
            sql`(
              ${environmentLeases.metadata}->>'kept' = 'true'
              or (${environmentLeases.metadata}->'kept' is null
                and ${environmentLeases.cleanupStatus} = 'success'
                and (${environmentLeases.status} = 'retained'
                  or ${environmentLeases.leasePolicy} in ('reuse_by_environment', 'reuse_by_execution_workspace')
                  or ${environments.config}->>'reuseLease' = 'true'))
            )`,
          ),
        )
        .orderBy(desc(environmentLeases.createdAt));
      return rows.map((r) => toLease(r.lease));
    }

    /**
     * Records a kept provider resource destroyed on every ended lease that held it, in one statement:
     * `patch` merged into their metadata, cleanup `success`, and a retained one `released`. Returns their ids.
     */
    async markResourceDestroyed(
      companyId: string,
      provider: string,
      providerLeaseId: string,
      patch: Record<string, unknown>,
      now: Date,
      /** A lease left as it is (the one whose own release freed the resource). */
      except?: string,
    ): Promise<string[]> {
      const rows = await this.db
        .update(environmentLeases)
        .set({
          metadata: sql`coalesce(${environmentLeases.metadata}, '{}'::jsonb) || ${JSON.stringify(patch)}::jsonb`,
          status: sql`case when ${environmentLeases.status} = 'retained' then 'released' else ${environmentLeases.status} end`,
          releasedAt: sql`coalesce(${environmentLeases.releasedAt}, ${now.toISOString()}::timestamptz)`,
          cleanupStatus: 'success',
          updatedAt: now,
        })
        .where(
          and(
            eq(environmentLeases.companyId, companyId),
            eq(environmentLeases.provider, provider),
            eq(environmentLeases.providerLeaseId, providerLeaseId),
            inArray(environmentLeases.status, ['released', 'expired', 'failed', 'retained']),
            ...(except ? [ne(environmentLeases.id, except)] : []),
          ),
        )
        .returning({ id: environmentLeases.id });
      return rows.map((r) => r.id);
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
      // One statement (the lease, the execution workspace and the log row), not a transaction of five.
      const leasePatch = JSON.stringify({ workspaceRealization: input.record });
      const leaseUpdate = this.db
        .update(environmentLeases)
        .set({
          metadata: sql`coalesce(${environmentLeases.metadata}, '{}'::jsonb) || ${leasePatch}::jsonb`,
          updatedAt: new Date(),
          ...(input.expiresAt ? { expiresAt: input.expiresAt, lastUsedAt: new Date() } : {}),
        })
        .where(
          and(
            eq(environmentLeases.id, input.leaseId),
            eq(environmentLeases.companyId, input.companyId),
            // Only with its execution workspace: nothing is half-written when that one is not the company's.
            input.executionWorkspaceId
              ? sql`exists (select 1 from execution_workspaces w where w.id = ${input.executionWorkspaceId} and w.company_id = ${input.companyId})`
              : undefined,
          ),
        )
        .returning();
      const wsPatch = JSON.stringify({
        workspaceRealizationRequest: input.request,
        workspaceRealization: input.record,
      });
      const wsUpdate = this.db
        .update(executionWorkspaces)
        .set({
          metadata: sql`coalesce(${executionWorkspaces.metadata}, '{}'::jsonb) || ${wsPatch}::jsonb`,
          lastUsedAt: new Date(),
          updatedAt: new Date(),
        })
        .where(
          and(
            eq(executionWorkspaces.id, input.executionWorkspaceId ?? '00000000-0000-0000-0000-000000000000'),
            eq(executionWorkspaces.companyId, input.companyId),
            // Only with the lease: a realization of a lease that is gone is not half-written.
            sql`${input.executionWorkspaceId !== null} and exists (select 1 from lease)`,
          ),
        )
        .returning();
      const r = await this.db.execute(sql`
        with lease as (${leaseUpdate.getSQL()}), ws as (${wsUpdate.getSQL()})
        ${input.log ? sql`, logged as (${logIfChanged(input.log, 'lease')})` : sql``}
        select (select row_to_json(lease) from lease) as lease, (select row_to_json(ws) from ws) as ws`);
      const row = r.rows[0] as { lease: Record<string, unknown> | null; ws: Record<string, unknown> | null };
      if (!row.lease) {
        throw new Error(
          `lease ${input.leaseId}${input.executionWorkspaceId ? ` or execution workspace ${input.executionWorkspaceId}` : ''} not found`,
        );
      }
      return {
        lease: rawLease(row.lease),
        executionWorkspace: row.ws ? toExecutionWorkspace(fromRaw<WsRow>(executionWorkspaces, row.ws)) : null,
      };
    }
  };
}
