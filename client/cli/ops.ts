// Operations across runs: `envrun stats` (readiness percentiles from visibility) and `envrun reaper …` (the
// sweep of leases whose run is gone). Durations are Temporal's strings (contracts/duration.ts). Declared in
// commands.ts.
import { durationMs, durationString } from '../../contracts/duration.js';
import { withRuns } from './connect.js';
import { check } from './input.js';
import { print, type Output } from './output.js';

export async function stats(o: Output & { since: string; company?: string }): Promise<void> {
  const since = check(durationString('must be a duration like 30m, 1h or 2d'), o.since, '--since');
  const sinceMs = durationMs(since)!;
  const rows = await withRuns((c) => c.stats(sinceMs, o.company !== undefined ? { companyId: o.company } : {}));
  print(o, rows, () =>
    [
      'driver/provider\truns\tp50 ms\tp95 ms',
      ...rows.map((s) => `${s.driver}/${s.provider}\t${s.runs}\t${s.p50Ms}\t${s.p95Ms}`),
    ].join('\n'),
  );
}

export async function installReaper(o: Output & { every: string }): Promise<void> {
  const every = check(durationString('must be a duration like 5m'), o.every, '--every');
  const created = await withRuns((c) => c.installReaper(every));
  print(o, { installed: created, every }, () => (created ? `installed (every ${every})` : 'already installed'));
}

export async function reaperRunOnce(o: Output): Promise<void> {
  const reaped = await withRuns((c) => c.reaperRunOnce());
  print(
    o,
    reaped,
    () => reaped.map((r) => `${r.leaseId}\t${r.cleanupStatus}\t${r.reason}`).join('\n') || '(nothing to release)',
  );
}
