// The egress proxy's audit, recorded: its rows summed into the store (a lease's first denial of each host,
// port and reason also in the activity log), and denied connections counted on the Temporal runtime's meter
// as `envrun_egress_denied` (phase, reason), which the worker's Prometheus endpoint serves.
import type { MetricCounter, MetricMeter } from '@temporalio/common';
import { Runtime } from '@temporalio/worker';
import type { EgressAuditRow } from '../drivers/egress/broker.js';
import type { Store } from '../store/store.js';

export const EGRESS_DENIED_METRIC = 'envrun_egress_denied';

/**
 * The supervisor's audit sink. The meter is the installed Runtime's, looked up at the first denial (a
 * process that installs its own Runtime does so before its worker runs any sandbox).
 */
export function egressAuditSink(
  store: Pick<Store, 'recordEgress'>,
  options: { meter?: () => MetricMeter } = {},
): (rows: EgressAuditRow[]) => Promise<void> {
  const meter = options.meter ?? (() => Runtime.instance().metricMeter);
  let denied: MetricCounter | undefined;
  return async (rows) => {
    for (const row of rows) {
      if (row.verdict !== 'denied') continue;
      denied ??= meter().createCounter(EGRESS_DENIED_METRIC, 'connections', 'connections the egress proxy refused');
      denied.add(row.connections, { phase: row.phase, reason: row.reason ?? 'unknown' });
    }
    await store.recordEgress(rows);
  };
}
