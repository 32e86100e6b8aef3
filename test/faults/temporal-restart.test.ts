// Fault: the Temporal dev server is stopped mid-run and started again on the same SQLite file and port.
// Runs in every phase ride it out (the worker and client reconnect; lost responses are retried by
// timeouts), then finish; the audit holds.
import { join } from 'node:path';
import { afterAll, expect, inject, it } from 'vitest';
import { freePort } from '../../lib/net.js';
import { startDevServer, type DevServer } from '../../scripts/dev-server.js';
import { audit } from '../support/audit.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';

let server: DevServer | undefined;
let h: Harness | undefined;
afterAll(async () => {
  await h?.close();
  await server?.stop();
});

it('restart the Temporal dev server (same db file) mid-run: every run finishes, the audit holds', async () => {
  const dir = join(inject('tmpRoot'), uniqueId('temporal-restart'));
  const options = {
    headless: true,
    port: await freePort(),
    dbFilename: join(dir, 'temporal.db'),
    logFile: join(dir, 'temporal.log'),
  };
  server = await startDevServer(options);
  h = await createHarness({ temporalAddress: server.address });
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  // Some runs ready before the restart, some provisioning across it, some started just before it.
  const early = Array.from({ length: 3 }, (_, i) => `early-${i}`);
  for (const id of early)
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const slow = Array.from({ length: 3 }, (_, i) => `slow-${i}`);
  for (const id of slow) {
    await h.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: env.id,
        runtimeOverlay: { provisionCommand: 'sleep 2' },
      }),
    );
  }
  await until(
    'a slow run provisioning',
    async () => (await h!.client.getRun(companyId, 'slow-0'))?.phase === 'realizing',
  );

  await server.stop();
  await new Promise((r) => setTimeout(r, 1500));
  server = await startDevServer(options);

  const late = Array.from({ length: 3 }, (_, i) => `late-${i}`);
  for (const id of late) await h.client.startRun(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const all = [...early, ...slow, ...late];
  for (const id of [...slow, ...late]) await h.client.waitReady(companyId, id);
  for (const id of all)
    expect((await h.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  const outcomes = await audit(h, companyId, all);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 180_000);
