// Queries over pooled leases: the sandboxes a warm pool keeps ready (contracts/pool.ts). A pooled lease is
// an ordinary lease row whose heartbeat run id has the pool prefix; its `metadata.pool.state` says where it
// is: filling → ready → taken (a run's now) or retiring. Every move between states is one compare-and-set
// statement, so a take and a retire of the same sandbox can never both win.
import { sql } from 'drizzle-orm';
import { ACTIVITY_ACTIONS, ACTORS, POOL_RUN_PREFIX, type EnvironmentLease } from '../contracts/index.js';
import type { QueryBase } from './base.js';
import { rawLease } from './leases.js';

const pooled = sql`starts_with(heartbeat_run_id, ${POOL_RUN_PREFIX})`;

export interface TakePooled {
  companyId: string;
  environmentId: string;
  heartbeatRunId: string;
  executionWorkspaceId: string | null;
  issueId: string | null;
  agentId: string | null;
  expiresAt: Date;
  /** The run's identity as drivers record it (`metadata.run`). */
  run: Record<string, unknown>;
  /** The activity-log row's event key prefix (the run's workflow id). */
  scope: string;
}

export function poolQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
    /** The environment's pooled leases that are still the pool's (active, not taken). */
    async listPooledLeases(companyId: string, environmentId: string): Promise<EnvironmentLease[]> {
      const r = await this.db.execute(sql`
        select * from environment_leases
        where company_id = ${companyId} and environment_id = ${environmentId} and status = 'active' and ${pooled}
        order by created_at`);
      return r.rows.map(rawLease);
    }

    /** How many leases of the environment are active (runs' and the pool's). */
    async countActiveLeases(environmentId: string): Promise<number> {
      const r = await this.db.execute(sql`
        select count(*)::int as n from environment_leases where environment_id = ${environmentId} and status = 'active'`);
      return Number(r.rows[0]?.n ?? 0);
    }

    /**
     * Hands the oldest ready pooled lease of the environment to the run, with its activity-log row, in one
     * statement: the row is locked as it is chosen; a concurrent take waits for that lock, finds the row
     * taken when it gets it, and goes on to the next ready one (not SKIP LOCKED, which would turn a run away
     * while a row it skipped is still there for it). Only a row still `ready` is taken. Null when none is ready. Throws a unique violation when the run already holds a
     * lease (a retried take) or its execution workspace is leased.
     */
    async takePooledLease(t: TakePooled): Promise<EnvironmentLease | null> {
      const details = {
        environmentId: t.environmentId,
        executionWorkspaceId: t.executionWorkspaceId,
        issueId: t.issueId,
      };
      const { actorType, actorId } = ACTORS.run;
      const r = await this.db.execute(sql`
        with candidate as (
          select id from environment_leases
          where company_id = ${t.companyId} and environment_id = ${t.environmentId} and status = 'active'
            and ${pooled} and metadata->'pool'->>'state' = 'ready'
          order by created_at
          limit 1
          for update
        ), taken as (
          update environment_leases l
          set heartbeat_run_id = ${t.heartbeatRunId},
              execution_workspace_id = ${t.executionWorkspaceId},
              issue_id = ${t.issueId},
              expires_at = ${t.expiresAt.toISOString()}::timestamptz,
              last_used_at = now(),
              updated_at = now(),
              metadata = l.metadata || jsonb_build_object(
                'run', ${JSON.stringify(t.run)}::jsonb,
                'pool', (l.metadata->'pool') || jsonb_build_object(
                  'state', 'taken', 'takenAt', now(), 'poolRunId', l.heartbeat_run_id))
          from candidate
          where l.id = candidate.id
          returning l.*
        ), logged as (
          insert into activity_log
            (company_id, actor_type, actor_id, action, entity_type, entity_id, agent_id, run_id, details, event_key)
          select company_id, ${actorType}, ${actorId}, ${ACTIVITY_ACTIONS.leaseTakenFromPool}, 'environment_lease',
                 id::text, ${t.agentId}, heartbeat_run_id,
                 ${JSON.stringify(details)}::jsonb || jsonb_build_object('providerLeaseId', provider_lease_id),
                 ${`${t.scope}:${ACTIVITY_ACTIONS.leaseTakenFromPool}:`} || id::text
          from taken
          on conflict (event_key) do nothing
        )
        select * from taken`);
      return r.rows[0] ? rawLease(r.rows[0]) : null;
    }

    /**
     * How long (ms) until `afterMs` have passed since a run last took one of the environment's pooled leases
     * (0 when longer ago, or none is held), on the database's clock.
     */
    async msUntilAfterLastTake(environmentId: string, afterMs: number): Promise<number> {
      const r = await this.db.execute(sql`
        select coalesce(greatest(0, ceil(extract(epoch from
                 max((metadata->'pool'->>'takenAt')::timestamptz) + ${afterMs} * interval '1 millisecond' - now())
                 * 1000)), 0)::int as ms
        from environment_leases
        where environment_id = ${environmentId} and status = 'active' and metadata->'pool'->>'state' = 'taken'`);
      return Number(r.rows[0]?.ms ?? 0);
    }

    /** A filled pooled lease becomes ready (unless it was retired or released meanwhile). */
    async markPooledReady(id: string, fingerprint: string, expiresAt: Date): Promise<EnvironmentLease | null> {
      const r = await this.db.execute(sql`
        update environment_leases
        set metadata = metadata || jsonb_build_object('pool', coalesce(metadata->'pool', '{}'::jsonb) ||
              jsonb_build_object('state', 'ready', 'fingerprint', ${fingerprint}::text, 'readyAt', now())),
            expires_at = ${expiresAt.toISOString()}::timestamptz,
            updated_at = now()
        where id = ${id} and status = 'active' and ${pooled}
          and coalesce(metadata->'pool'->>'state', 'filling') = 'filling'
        returning *`);
      return r.rows[0] ? rawLease(r.rows[0]) : null;
    }

    /** Claims a pooled lease for retirement; null when a run took it first (or it has ended). */
    async claimPooledForRetire(id: string, reason: string): Promise<EnvironmentLease | null> {
      const r = await this.db.execute(sql`
        update environment_leases
        set metadata = metadata || jsonb_build_object('pool', coalesce(metadata->'pool', '{}'::jsonb) ||
              jsonb_build_object('state', 'retiring', 'retiredFor', ${reason}::text)),
            updated_at = now()
        where id = ${id} and status = 'active' and ${pooled}
          and coalesce(metadata->'pool'->>'state', 'filling') in ('filling', 'ready', 'retiring')
        returning *`);
      return r.rows[0] ? rawLease(r.rows[0]) : null;
    }
  };
}
