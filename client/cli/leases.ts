// `envrun lease …`: a company's leases, and releasing one kept by retain_on_failure. Declared in commands.ts.
import { ExternalId } from '../../contracts/index.js';
import { withAdmin } from './connect.js';
import { check, checkId, type IdOptions } from './input.js';
import { print, type Output } from './output.js';

export async function listLeases(o: Output & { company: string; status?: string }): Promise<void> {
  const companyId = check(ExternalId, o.company, '--company');
  const leases = await withAdmin((a) => a.listLeases(companyId, o.status));
  print(
    o,
    leases,
    () =>
      leases
        .map(
          (l) => `${l.id}\t${l.status}\t${l.environmentId}\trun=${l.heartbeatRunId}\tcleanup=${l.cleanupStatus ?? '-'}`,
        )
        .join('\n') || '(none)',
  );
}

export async function releaseLease(id: string, o: IdOptions): Promise<void> {
  const { companyId } = checkId(id, o);
  const released = await withAdmin((a) => a.releaseRetainedLease(companyId, id));
  print(o, released, () => `${released.id}\t${released.status}\tcleanup=${released.cleanupStatus}`);
}
