// Operations across runs: `envrun stats` (readiness percentiles from visibility) and `envrun reaper …` (the
// sweep of leases whose run is gone). Durations are Temporal's strings (contracts/duration.ts).
import type { Command } from 'commander';
import { durationMs, durationString } from '../../contracts/duration.js';
import { withRuns } from './connect.js';
import { check, json } from './input.js';
import { print } from './output.js';

export function addOpsCommands(program: Command): void {
  program
    .command('stats')
    .description('p50/p95 of requested→ready per driver/provider (from visibility)')
    .option('--since <duration>', 'e.g. 30m, 1h, 2d', '1h')
    .option('--company <id>', "only this company's runs")
    .addOption(json())
    .action(async (o) => {
      const since = check(durationString('must be a duration like 30m, 1h or 2d'), o.since, '--since');
      const sinceMs = durationMs(since)!;
      const stats = await withRuns((c) => c.stats(sinceMs, o.company !== undefined ? { companyId: o.company } : {}));
      print(o, stats, () =>
        [
          'driver/provider\truns\tp50 ms\tp95 ms',
          ...stats.map((s) => `${s.driver}/${s.provider}\t${s.runs}\t${s.p50Ms}\t${s.p95Ms}`),
        ].join('\n'),
      );
    });

  const reaper = program.command('reaper').description('the sweep of leases whose run is gone').exitOverride();
  reaper
    .command('install')
    .description('create the reaper schedule')
    .option('--every <duration>', 'e.g. 5m', '5m')
    .addOption(json())
    .action(async (o) => {
      const every = check(durationString('must be a duration like 5m'), o.every, '--every');
      const created = await withRuns((c) => c.installReaper(every));
      print(o, { installed: created, every }, () => (created ? `installed (every ${every})` : 'already installed'));
    });
  reaper
    .command('run-once')
    .description('sweep now and print what was released')
    .addOption(json())
    .action(async (o) => {
      const reaped = await withRuns((c) => c.reaperRunOnce());
      print(
        o,
        reaped,
        () => reaped.map((r) => `${r.leaseId}\t${r.cleanupStatus}\t${r.reason}`).join('\n') || '(nothing to release)',
      );
    });
}
