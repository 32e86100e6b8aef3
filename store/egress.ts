// Queries over the egress audit: what a sandbox's egress proxy let through or refused, summed per lease phase,
// host, port, verdict and reason. The first denial of each also goes to the activity log, once.
import { and, asc, eq, sql } from 'drizzle-orm';
import { ACTIVITY_ACTIONS, ACTORS, type EgressAuditRow, type EgressPhase } from '../contracts/index.js';
import { iso, type QueryBase } from './base.js';
import { egressAudit } from './schema.js';

export type { EgressAuditRow };

/** A listed audit row, as the admin API and `envrun run egress` return it: times as ISO 8601. */
export type EgressAuditEntry = Omit<EgressAuditRow, 'companyId' | 'heartbeatRunId' | 'firstAt' | 'lastAt'> & {
  firstAt: string;
  lastAt: string;
};

/** Longer than any DNS name (253) or address: what a sandbox asks for is hostile, and it is a key column. */
const MAX_HOST = 255;

/** The event key of a denial's activity-log row: once per lease, phase, host, port and reason. */
export function egressDeniedKey(row: Pick<EgressAuditRow, 'leaseId' | 'phase' | 'host' | 'port' | 'reason'>): string {
  return `egress:${row.phase}:${row.host.slice(0, MAX_HOST)}:${row.port}:${row.reason ?? ''}:${ACTIVITY_ACTIONS.egressDenied}:${row.leaseId}`;
}

export function egressQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
    /**
     * Adds the rows to the audit in one statement: counts and bytes summed into the row of the same lease,
     * phase, host, port, verdict and reason, its first and last times widened; a denial not seen before for
     * the lease also writes its `environment.egress_denied` row (by event key: never twice). Returns how many
     * activity-log rows it wrote.
     */
    async recordEgress(rows: EgressAuditRow[]): Promise<number> {
      if (rows.length === 0) return 0;
      const input = rows.map((r) => ({
        company_id: r.companyId,
        heartbeat_run_id: r.heartbeatRunId,
        lease_id: r.leaseId,
        environment_id: r.environmentId,
        phase: r.phase,
        host: r.host.slice(0, MAX_HOST),
        port: r.port,
        verdict: r.verdict,
        reason: r.reason ?? '',
        connections: r.connections,
        bytes_up: r.bytesUp,
        bytes_down: r.bytesDown,
        first_at: r.firstAt.toISOString(),
        last_at: r.lastAt.toISOString(),
        event_key: egressDeniedKey(r),
      }));
      const { actorType, actorId } = ACTORS.run;
      const r = await this.db.execute(sql`
        with input as (
          select lease_id, phase, host, port, verdict, reason,
                 min(company_id) as company_id, min(heartbeat_run_id) as heartbeat_run_id,
                 min(environment_id) as environment_id, min(event_key) as event_key,
                 sum(connections)::bigint as connections, sum(bytes_up)::bigint as bytes_up,
                 sum(bytes_down)::bigint as bytes_down, min(first_at) as first_at, max(last_at) as last_at
          from jsonb_to_recordset(${JSON.stringify(input)}::jsonb) as x(
            company_id text, heartbeat_run_id text, lease_id text, environment_id text, phase text, host text,
            port integer, verdict text, reason text, connections bigint, bytes_up bigint, bytes_down bigint,
            first_at timestamptz, last_at timestamptz, event_key text)
          group by lease_id, phase, host, port, verdict, reason
        ), upserted as (
          insert into egress_audit
            (company_id, heartbeat_run_id, lease_id, environment_id, phase, host, port, verdict, reason,
             connections, bytes_up, bytes_down, first_at, last_at)
          select company_id, heartbeat_run_id, lease_id, environment_id, phase, host, port, verdict, reason,
                 connections, bytes_up, bytes_down, first_at, last_at
          from input
          on conflict (lease_id, phase, host, port, verdict, reason) do update set
            connections = egress_audit.connections + excluded.connections,
            bytes_up = egress_audit.bytes_up + excluded.bytes_up,
            bytes_down = egress_audit.bytes_down + excluded.bytes_down,
            first_at = least(egress_audit.first_at, excluded.first_at),
            last_at = greatest(egress_audit.last_at, excluded.last_at)
        ), logged as (
          insert into activity_log
            (company_id, actor_type, actor_id, action, entity_type, entity_id, agent_id, run_id, details, event_key)
          select company_id, ${actorType}, ${actorId}, ${ACTIVITY_ACTIONS.egressDenied}, 'environment_lease',
                 lease_id, null, heartbeat_run_id,
                 jsonb_build_object('environmentId', environment_id, 'phase', phase, 'host', host, 'port', port,
                                    'reason', reason, 'at', first_at),
                 event_key
          from input
          where verdict = 'denied'
          on conflict (event_key) do nothing
          returning 1
        )
        select count(*)::int as logged from logged`);
      return Number(r.rows[0]?.logged ?? 0);
    }

    /** The run's audit rows (all its leases), oldest first. */
    async listEgress(companyId: string, heartbeatRunId: string): Promise<EgressAuditEntry[]> {
      const rows = await this.db
        .select()
        .from(egressAudit)
        .where(and(eq(egressAudit.companyId, companyId), eq(egressAudit.heartbeatRunId, heartbeatRunId)))
        .orderBy(
          asc(egressAudit.firstAt),
          asc(egressAudit.host),
          asc(egressAudit.port),
          asc(egressAudit.phase),
          asc(egressAudit.verdict),
          asc(egressAudit.reason),
        );
      return rows.map((r) => ({
        leaseId: r.leaseId,
        environmentId: r.environmentId,
        phase: r.phase as EgressPhase,
        host: r.host,
        port: r.port,
        verdict: r.verdict as 'allowed' | 'denied',
        reason: r.reason === '' ? null : r.reason,
        connections: r.connections,
        bytesUp: r.bytesUp,
        bytesDown: r.bytesDown,
        firstAt: iso(r.firstAt),
        lastAt: iso(r.lastAt),
      }));
    }
  };
}
