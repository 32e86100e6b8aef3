// Fault: one of the two envrun worker hosts is killed (SIGKILL) while it runs realizations. On a resource
// any host reaches (the shared provider), its prepare attempts time out on their heartbeat and are retried
// by the other host. On a host-bound one (the fake provider, whose sandboxes live in the dead host's data
// folder), the run finds the host gone (its queue has no poller within ENVRUN_HOST_STALE_MS), ends that
// lease `lost` and is placed again on the other host. Its sticky workflow tasks time out to the shared
// queue. Every run is finished by the surviving host, and the audit holds: one lease per run besides the
// lost ones, no active lease, no leftover sandbox, no duplicate log entry.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';
import { clusterClients, clusterState, control, type ClusterClients } from './support.js';

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
  const fake = await c.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const bound = Array.from({ length: 6 }, (_, i) => `bound-${i}`);
  for (const id of bound)
    await c.client.startRun(
      runRequest({
        companyId,
        heartbeatRunId: id,
        environmentId: fake.id,
        hostPickupMs: 2000,
        runtimeOverlay: { provisionCommand: 'sleep 20; echo done > provisioned' },
      }),
    );
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
  // Which host runs which realization: the worker identity is `<pid>@<hostname>` (the pids of now: an
  // earlier file may have restarted a host).
  const { hosts } = await clusterState();
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
  // The victim: the host with the most runs in flight, shared or host-bound (bound ones by their lease).
  const boundHosts: string[] = [];
  for (const id of bound) boundHosts.push(String((await c.store.findRunLease(companyId, id))?.metadata?.hostId));
  const perHost = hosts.map(
    (h, i) => [...realizing.values()].filter((x) => x === i).length + boundHosts.filter((x) => x === h.id).length,
  );
  const victim = perHost.indexOf(Math.max(...perHost));
  const victimRuns = [...realizing].filter(([, h]) => h === victim).map(([id]) => id);
  console.log(`host-kill: realizing per host ${JSON.stringify(perHost)}; killing host ${victim} (${victimRuns})`);
  // The host-bound runs realizing on the victim (a 20 s provision: none is ready yet): their sandboxes die
  // with it.
  const boundOnVictim: string[] = [];
  for (const id of bound) {
    const lease = await c.store.findRunLease(companyId, id);
    if (lease?.metadata?.hostId === hosts[victim]!.id && (await c.client.getRun(companyId, id))?.phase === 'realizing')
      boundOnVictim.push(id);
  }
  expect(boundOnVictim.length, 'host-bound runs on the victim').toBeGreaterThan(0);
  await control(`hosts/${victim}/kill`);
  killed = victim;

  for (const id of runs) {
    const ready = await c.client.waitReady(companyId, id);
    expect(ready.executionTarget).toMatchObject({ transport: 'sandbox' });
  }
  // The killed host's realizations were finished by the survivor: the attempt the history records is its.
  const survivor = hosts.find((_, i) => i !== victim)!;
  for (const id of victimRuns) expect(await c.realizedBy(companyId, id), id).toMatch(new RegExp(`^${survivor.pid}@`));
  // Host-bound runs are ready on the survivor; those the victim held were placed again, their first lease lost.
  const survivorId = hosts.find((_, i) => i !== victim)!.id;
  for (const id of bound) {
    const ready = await c.client.waitReady(companyId, id);
    expect(ready.lease.metadata?.hostId, id).toBe(
      boundOnVictim.includes(id) ? survivorId : ready.lease.metadata?.hostId,
    );
  }
  console.log(`host-kill: host-bound runs realizing on the victim: ${boundOnVictim}`);
  for (const id of boundOnVictim) {
    const leases = await c.store.listRunLeases(companyId, id);
    expect(
      leases.map((l) => l.status),
      id,
    ).toEqual(['lost', 'active']);
  }
  for (const id of [...runs, ...bound])
    expect((await c.client.completeRun(companyId, id, { status: 'succeeded' })).phase).toBe('released');
  const outcomes = await audit(c, companyId, [...runs, ...bound]);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 360_000);
