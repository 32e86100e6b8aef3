// `envrun lease …`: a company's leases, and releasing one kept by retain_on_failure.
import { Option, type Command } from 'commander';
import { ExternalId } from '../../contracts/index.js';
import { withAdmin } from './connect.js';
import { check, company, idCommand, json } from './input.js';
import { print } from './output.js';

export function addLeaseCommands(program: Command): void {
  const lease = program.command('lease').description('environment leases').exitOverride();
  lease
    .command('list')
    .description("list a company's leases")
    .addOption(company())
    .addOption(new Option('--status <status>').choices(['active', 'released', 'expired', 'failed', 'retained']))
    .addOption(json())
    .action(async (o) => {
      const companyId = check(ExternalId, o.company, '--company');
      const leases = await withAdmin((a) => a.listLeases(companyId, o.status));
      print(
        o,
        leases,
        () =>
          leases
            .map(
              (l) =>
                `${l.id}\t${l.status}\t${l.environmentId}\trun=${l.heartbeatRunId}\tcleanup=${l.cleanupStatus ?? '-'}`,
            )
            .join('\n') || '(none)',
      );
    });

  idCommand(
    lease,
    'release',
    'release a lease kept by retain_on_failure (destroys its resource)',
    async (companyId, id, o) => {
      const released = await withAdmin((a) => a.releaseRetainedLease(companyId, id));
      print(o, released, () => `${released.id}\t${released.status}\tcleanup=${released.cleanupStatus}`);
    },
  );
}
