// Queries over the activity log: each entry written once, by its event key.
import { and, asc, eq } from 'drizzle-orm';
import type { ActivityLogEntry } from '../contracts/index.js';
import { iso, type QueryBase } from './base.js';
import { activityLog } from './schema.js';

type LogRow = typeof activityLog.$inferSelect;

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

export function activityLogQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
    /** Writes the entry once: a second write of the same event key is a no-op. Returns whether it wrote. */
    async logActivity(entry: NewActivity): Promise<boolean> {
      const rows = await this.db
        .insert(activityLog)
        .values(entry)
        .onConflictDoNothing({ target: activityLog.eventKey })
        .returning({ id: activityLog.id });
      return rows.length > 0;
    }

    async listActivity(
      companyId: string,
      filter: { runId?: string; action?: string } = {},
    ): Promise<ActivityLogEntry[]> {
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
  };
}
