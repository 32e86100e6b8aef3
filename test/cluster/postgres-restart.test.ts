// Fault: the cluster's one PostgreSQL, which holds Temporal's persistence and visibility and envrun's
// store, is stopped mid-run and started again on the same port. The Temporal services and the worker
// hosts retry (history reacquires its shards; envrun's database steps retry by their policies); runs that
// were ready, provisioning or releasing across the outage finish, later runs go through; the audit holds.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';
import { clusterClients, control, type ClusterClients } from './support.js';

let c: ClusterClients;
beforeAll(async () => {
  c = await clusterClients();
});
afterAll(async () => {
  await c?.close();
});

it('restart PostgreSQL mid-run: the server and the hosts ride it out, every run finishes, the audit holds', async () => {
  const companyId = uniqueId('co');
  const env = await c.admin.createEnvironment({
    companyId,
    name: 'shared',
    driver: 'sandbox',
    config: { provider: 'shared' },
  });
  const ready = ['ready-0', 'ready-1'];
  for (const id of ready)
    await c.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const slow = ['slow-0', 'slow-1', 'slow-2'];
  for (const id of slow)
    await c.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: env.id,
        runtimeOverlay: { provisionCommand: 'sleep 2' },
      }),
    );
  await until('slow runs provisioning', async () => (await c.realizingOn(companyId, 'slow-2')) !== null, 60_000);
  // Ready runs asked to complete just before the outage: their release meets it.
  const completing = ready.map((id) =>
    c.client.completeRun(companyId, id, { status: 'succeeded' }).then(
      (s) => s.phase,
      (e: unknown) => e as Error,
    ),
  );

  await control('postgres/restart?downMs=5000');
  // The database is back; the cluster answers again (history owns its shards) before anything is judged.
  await until(
    'the cluster answers',
    async () => (await c.client.getRun(companyId, 'ready-0').catch(() => null)) !== null,
    120_000,
  );

  const late = ['late-0', 'late-1'];
  for (const id of late) await c.client.startRun(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  for (const [i, phase] of (await Promise.all(completing)).entries()) {
    // A complete request lost with the outage is simply asked again; the run must end released.
    if (phase !== 'released') {
      const state = await c.client.getRun(companyId, ready[i]!);
      if (state?.phase !== 'released')
        expect((await c.client.completeRun(companyId, ready[i]!, { status: 'succeeded' })).phase).toBe('released');
    }
  }
  for (const id of [...slow, ...late]) {
    await c.client.waitReady(companyId, id);
    expect((await c.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  }
  const outcomes = await audit(c, companyId, [...ready, ...slow, ...late]);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 300_000);
