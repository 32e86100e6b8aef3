// Queries over environments.
import { and, asc, eq, sql } from 'drizzle-orm';
import type { Driver, Environment, EnvironmentStatus } from '../contracts/index.js';
import { iso, type QueryBase } from './base.js';
import { environments } from './schema.js';

type EnvRow = typeof environments.$inferSelect;

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

export interface NewEnvironment {
  companyId: string;
  name: string;
  description?: string | null;
  driver: Driver;
  config: Record<string, unknown>;
  metadata?: Record<string, unknown> | null;
}

export function environmentQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
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
      patch: {
        name?: string;
        description?: string | null;
        config?: Record<string, unknown>;
        status?: EnvironmentStatus;
      },
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
  };
}
