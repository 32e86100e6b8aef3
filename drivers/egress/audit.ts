// The egress proxy's events, summed into audit rows per route (a lease's phase), host, port, verdict and reason.
// A sandbox chooses the hosts it tries, so a route keeps at most `limit` distinct keys for its whole life;
// connections beyond them are summed into one row per verdict and reason with host `*` and port 0: the
// totals stay right and neither the rows nor the activity log grow without bound.
import { EGRESS_DENY_REASONS, type EgressAuditRow } from '../../contracts/egress.js';
import type { EgressEvent } from './proxy.js';

/** The reasons an audit row may carry: a refusal's, or an allowed connection whose upstream failed. */
const KNOWN_REASONS = new Set<string>([...EGRESS_DENY_REASONS, 'upstream_failed']);

/** Distinct (host, port, verdict, reason) keys a route's audit keeps before it sums into host `*`. */
export const AUDIT_KEYS_PER_ROUTE = 256;
export const OVERFLOW_HOST = '*';

type Meta = Pick<EgressAuditRow, 'companyId' | 'heartbeatRunId' | 'leaseId' | 'environmentId' | 'phase'>;

export interface EgressAuditAggregator {
  /** Who a route's rows are for; a route opened again keeps the keys it has seen. */
  route(routeId: string, meta: Meta): void;
  /** Forgets a route (after its last rows were taken). */
  forget(routeId: string): void;
  /** Adds one event; false when its route is not known. */
  record(event: EgressEvent): boolean;
  /** The rows summed since the last take. */
  take(): EgressAuditRow[];
  readonly pending: number;
}

export function createAuditAggregator(limit = AUDIT_KEYS_PER_ROUTE): EgressAuditAggregator {
  const routes = new Map<string, { meta: Meta; keys: Set<string> }>();
  const rows = new Map<string, EgressAuditRow>();
  return {
    route(routeId, meta) {
      const known = routes.get(routeId);
      if (known) known.meta = meta;
      else routes.set(routeId, { meta, keys: new Set() });
    },
    forget(routeId) {
      routes.delete(routeId);
    },
    record(event) {
      const r = routes.get(event.routeId);
      if (!r) return false;
      // The proxy process reads what sandboxes send: a reason it names is one envrun knows, or bad_request.
      const reason = event.reason == null ? null : KNOWN_REASONS.has(event.reason) ? event.reason : 'bad_request';
      let host = event.host;
      let port = event.port;
      const own = JSON.stringify([host, port, event.verdict, reason]);
      if (!r.keys.has(own)) {
        if (r.keys.size < limit) r.keys.add(own);
        else {
          host = OVERFLOW_HOST;
          port = 0;
        }
      }
      const key = JSON.stringify([event.routeId, host, port, event.verdict, reason]);
      const at = new Date(event.at);
      const row = rows.get(key);
      if (row) {
        row.connections += 1;
        row.bytesUp += event.bytesUp;
        row.bytesDown += event.bytesDown;
        if (at < row.firstAt) row.firstAt = at;
        if (at > row.lastAt) row.lastAt = at;
      } else {
        rows.set(key, {
          ...r.meta,
          host,
          port,
          verdict: event.verdict,
          reason,
          connections: 1,
          bytesUp: event.bytesUp,
          bytesDown: event.bytesDown,
          firstAt: at,
          lastAt: at,
        });
      }
      return true;
    },
    take() {
      const batch = [...rows.values()];
      rows.clear();
      return batch;
    },
    get pending() {
      return rows.size;
    },
  };
}
