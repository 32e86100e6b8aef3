// Fault: PostgreSQL (a separate Debian server) is stopped mid-run and started again on the same port.
// Database steps fail while it is down and retry (local activities by time window, release for up to 30
// minutes); runs in every phase finish once it is back, with nothing written twice.
import { join } from 'node:path';
import { afterAll, expect, inject, it } from 'vitest';
import { audit } from '../support/audit.js';
import { startDebianPostgres, type DebianPostgres } from '../support/debian-postgres.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';

let pg: DebianPostgres | undefined;
let h: Harness | undefined;
afterAll(async () => {
  await h?.close().catch(() => undefined);
  await pg?.stop();
});

it('stop PostgreSQL mid-run and start it again: activities retry, every run finishes, nothing duplicated', async () => {
  const dir = join(inject('tmpRoot'), uniqueId('pg-restart'));
  pg = await startDebianPostgres(dir);
  h = await createHarness({ adminUrl: pg.url });
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const ready = ['ready-0', 'ready-1'];
  for (const id of ready)
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const slow = ['slow-0', 'slow-1'];
  for (const id of slow) {
    await h.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: env.id,
        runtimeOverlay: { provisionCommand: 'sleep 1.5' },
      }),
    );
  }
  await until(
    'slow runs provisioning',
    async () => (await h!.client.getRun(companyId, 'slow-1'))?.phase === 'realizing',
  );

  await pg.stop();
  // While it is down: ready runs are completed (their release waits), new runs are started (their
  // resolve waits), and the slow runs finish provisioning (their persist, inside the prepare step, waits).
  const completing = ready.map((id) => h!.client.completeRun(companyId, id, { status: 'succeeded' }));
  for (const p of completing) p.catch(() => undefined);
  const late = ['late-0', 'late-1'];
  for (const id of late) await h.client.startRun(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  await until('persist and release waiting on the database', async () => {
    const phases = await Promise.all(
      [...slow, ...ready].map(async (id) => (await h!.client.getRun(companyId, id))?.phase),
    );
    return phases.every((p) => p === 'realizing' || p === 'releasing');
  });
  await new Promise((r) => setTimeout(r, 3000));
  expect((await h.client.getRun(companyId, 'late-0'))?.phase).toBe('resolving');
  pg = await startDebianPostgres(dir, { port: pg.port });

  for (const state of await Promise.all(completing)) expect(state.phase).toBe('released');
  for (const id of [...slow, ...late]) {
    await h.client.waitReady(companyId, id);
    expect((await h.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  }
  const outcomes = await audit(h, companyId, [...ready, ...slow, ...late]);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 180_000);
