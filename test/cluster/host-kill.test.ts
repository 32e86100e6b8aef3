// Fault: one of the two envrun worker hosts is killed (SIGKILL) while it runs realizations. Its realize
// attempts time out on their heartbeat and are retried by the other host; its sticky workflow tasks time
// out to the shared queue. Every run is finished by the surviving host (or fails with a declared code), and
// the audit holds: one lease per run, no active lease, no leftover sandbox, no duplicate log entry.
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { audit } from '../support/audit.js';
import { uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';
import { clusterClients, control, type ClusterClients } from './support.js';

let c: ClusterClients;
let killed: number | null = null;
beforeAll(async () => {
  c = await clusterClients();
});
afterAll(async () => {
  if (killed !== null) await control(`hosts/${killed}/start`); // the cluster whole again for the next file
  await c?.close();
});

it('kill -9 one worker host mid-realization: the other host finishes its runs, the audit holds', async () => {
  const companyId = uniqueId('co');
  const env = await c.admin.createEnvironment({
    companyId,
    name: 'shared',
    driver: 'sandbox',
    config: { provider: 'shared' },
  });
  const runs = Array.from({ length: 8 }, (_, i) => `run-${i}`);
  for (const id of runs)
    await c.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: env.id,
        runtimeOverlay: { provisionCommand: 'sleep 6; echo done > provisioned' },
      }),
    );
  // Which host runs which realization: the worker identity is `<pid>@<hostname>`.
  const hosts = inject('cluster').hosts;
  const hostOf = (identity: string) => hosts.findIndex((h) => h.pid !== null && identity.startsWith(`${h.pid}@`));
  const realizing = await until(
    'most runs realizing',
    async () => {
      const on = new Map<string, number>();
      for (const id of runs) {
        const identity = await c.realizingOn(companyId, id);
        if (identity) on.set(id, hostOf(identity));
      }
      return on.size >= 4 ? on : null;
    },
    60_000,
  );
  expect([...realizing.values()].every((h) => h >= 0)).toBe(true);
  const perHost = hosts.map((_, i) => [...realizing.values()].filter((h) => h === i).length);
  const victim = perHost.indexOf(Math.max(...perHost));
  const victimRuns = [...realizing].filter(([, h]) => h === victim).map(([id]) => id);
  console.log(`host-kill: realizing per host ${JSON.stringify(perHost)}; killing host ${victim} (${victimRuns})`);
  await control(`hosts/${victim}/kill`);
  killed = victim;

  for (const id of runs) {
    const ready = await c.client.waitReady(companyId, id);
    expect(ready.executionTarget).toMatchObject({ transport: 'sandbox' });
  }
  // The killed host's realizations were finished by the survivor: the attempt the history records is its.
  const survivor = hosts.find((_, i) => i !== victim)!;
  for (const id of victimRuns) expect(await c.realizedBy(companyId, id), id).toMatch(new RegExp(`^${survivor.pid}@`));
  for (const id of runs)
    expect((await c.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  const outcomes = await audit(c, companyId, runs);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 240_000);
