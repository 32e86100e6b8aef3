// Queries over execution workspaces.
import { and, eq } from 'drizzle-orm';
import type { ExecutionWorkspace } from '../contracts/index.js';
import { iso, isoOrNull, type QueryBase } from './base.js';
import { executionWorkspaces } from './schema.js';

export type WsRow = typeof executionWorkspaces.$inferSelect;

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

export function workspaceQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
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
  };
}
