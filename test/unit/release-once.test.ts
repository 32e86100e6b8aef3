// Releasing a lease twice at once (the reaper beside an operator, two sweeps) ends it once and frees its
// resource once: the second release finds the row changed and does nothing.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { ACTIVITY_ACTIONS } from '../../contracts/index.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { releaseOrphanLease } from '../../leases/release.js';
import { Store } from '../../store/store.js';
import { freshDatabase, uniqueId } from '../support/harness.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
const dataDir = join(inject('tmpRoot'), uniqueId('release-once'));

beforeAll(async () => {
  mkdirSync(dataDir, { recursive: true });
  db = await freshDatabase();
  store = new Store(db.db);
});
afterAll(async () => {
  await db?.close();
});

it('two concurrent orphan releases of one active lease: one release, one log row, one null', async () => {
  const drivers = createDrivers(createProviders({ dataDir }));
  const companyId = uniqueId('co');
  const environment = await store.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    description: null,
    config: { provider: 'fake' },
  });
  for (let round = 0; round < 5; round++) {
    const lease = await store.insertLease({
      companyId,
      environmentId: environment.id,
      executionWorkspaceId: null,
      issueId: null,
      heartbeatRunId: `gone-${round}`,
      leasePolicy: 'ephemeral',
      provider: 'fake',
      metadata: null,
      expiresAt: null,
    });
    const results = await Promise.all([
      releaseOrphanLease({ store, drivers }, lease, 'reaped: first'),
      releaseOrphanLease({ store, drivers }, lease, 'reaped: second'),
    ]);
    expect(results.filter((r) => r !== null)).toHaveLength(1);
    const stored = await store.getLease(companyId, lease.id);
    expect(stored).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    const logged = await store.listActivity(companyId, {
      runId: `gone-${round}`,
      action: ACTIVITY_ACTIONS.leaseReleased,
    });
    expect(logged).toHaveLength(1);
  }
});
