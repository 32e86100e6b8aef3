// Fault: the Temporal history service (all 4 shards) is killed (SIGKILL) mid-run and started again on the
// same ports. Runs in every phase ride it out (frontend, matching, the worker hosts and the client retry
// until the shards are owned again), then finish; the audit holds.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';
import { clusterClients, control, type ClusterClients } from './support.js';

let c: ClusterClients;
let down = false;
beforeAll(async () => {
  c = await clusterClients();
});
afterAll(async () => {
  if (down) await control('services/history/start');
  await c?.close();
});

it('kill -9 the history service mid-run and start it again: every run finishes, the audit holds', async () => {
  const companyId = uniqueId('co');
  const env = await c.admin.createEnvironment({
    companyId,
    name: 'shared',
    driver: 'sandbox',
    config: { provider: 'shared' },
  });
  // Some runs ready before the kill, some provisioning across it, some started after it.
  const early = Array.from({ length: 3 }, (_, i) => `early-${i}`);
  for (const id of early)
    await c.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const slow = Array.from({ length: 3 }, (_, i) => `slow-${i}`);
  for (const id of slow)
    await c.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: env.id,
        runtimeOverlay: { provisionCommand: 'sleep 3' },
      }),
    );
  await until('a slow run provisioning', async () => (await c.realizingOn(companyId, 'slow-0')) !== null, 60_000);

  let state = await control('services/history/kill');
  down = true;
  expect(state.services.history.pid).toBeNull();
  await new Promise((r) => setTimeout(r, 2000));
  state = await control('services/history/start');
  down = false;
  expect(state.services.history.pid).not.toBeNull();

  const late = Array.from({ length: 3 }, (_, i) => `late-${i}`);
  for (const id of late) await c.client.startRun(runRequest({ companyId, heartbeatRunId: id, environmentId: env.id }));
  const all = [...early, ...slow, ...late];
  for (const id of [...slow, ...late]) await c.client.waitReady(companyId, id);
  for (const id of all)
    expect((await c.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  const outcomes = await audit(c, companyId, all);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 240_000);
