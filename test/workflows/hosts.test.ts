// Two worker hosts with their own data folders on one task queue and one database: a sandbox lives on the
// host that acquired it, so every later step on it (realize, target, exec, release) must run there. The
// client runs no driver: `exec` reaches the right sandbox through the run's workflow.
import { NativeConnection } from '@temporalio/worker';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { hostTaskQueue } from '../../contracts/index.js';
import { loadProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { createWorker, type EnvRunWorker } from '../../worker/worker.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';

let h: Harness;
let hostB: { worker: EnvRunWorker; running: Promise<void>; connection: NativeConnection; dataDir: string };
const HOST_A = uniqueId('host-a');
const HOST_B = uniqueId('host-b');

beforeAll(async () => {
  h = await createHarness({ hostId: HOST_A });
  const dataDir = join(inject('tmpRoot'), uniqueId('data-b'));
  mkdirSync(dataDir, { recursive: true });
  const drivers = createDrivers(await loadProviders({ dataDir, providerModules: [] }));
  const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
  const worker = await createWorker({
    connection,
    namespace: 'default',
    taskQueue: h.taskQueue,
    deps: { store: h.store, drivers, provisionTimeoutMs: 30_000, hostId: HOST_B },
    workflowBundlePath: inject('workflowBundle'),
    shutdownGraceMs: 1000,
  });
  hostB = { worker, running: worker.run(), connection, dataDir };
});
afterAll(async () => {
  hostB?.worker.shutdown();
  await hostB?.running;
  await hostB?.connection.close();
  await h?.close();
});

/** The files left in a host's fake sandboxes (empty folders of released runs aside). */
const sandboxesOf = (dataDir: string) => {
  const root = join(dataDir, 'sandboxes', 'fake');
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name));
};

it('every run gets ready, exec reaches its own sandbox, and release cleans up on the right host', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const runs = Array.from({ length: 12 }, (_, i) => `run-${i}`);
  const ready = await Promise.all(
    runs.map((heartbeatRunId) =>
      h.client.startRunAndWaitReady(
        runRequest({
          companyId,
          heartbeatRunId,
          environmentId: env.id,
          cwd: tempWorkspace(),
          runtimeOverlay: { provisionCommand: `echo ${heartbeatRunId} > whoami` },
        }),
      ),
    ),
  );
  // Each lease records the host that made its sandbox (both hosts poll the shared queue for acquire).
  const hosts = ready.map((r) => r.lease.metadata?.hostId);
  expect(
    hosts.every((host) => host === HOST_A || host === HOST_B),
    String(hosts),
  ).toBe(true);

  for (const [i, heartbeatRunId] of runs.entries()) {
    const out = await h.client.exec(companyId, heartbeatRunId, { command: 'cat', args: ['whoami'] });
    expect(out, `exec of ${heartbeatRunId} on ${hosts[i]}`).toMatchObject({
      exitCode: 0,
      stdout: `${heartbeatRunId}\n`,
    });
  }
  // The host queue is where the sandbox's steps ran.
  const history = await h.client.temporal.workflow.getHandle(`envrun/${companyId}/run-0`).fetchHistory();
  const queues = (history.events ?? [])
    .map((e) => e.activityTaskScheduledEventAttributes)
    .filter((a) => a?.activityType?.name === 'prepareWorkspace' || a?.activityType?.name === 'execCommand')
    .map((a) => a!.taskQueue?.name);
  expect(queues).toEqual([hostTaskQueue(h.taskQueue, String(hosts[0])), hostTaskQueue(h.taskQueue, String(hosts[0]))]);

  for (const heartbeatRunId of runs) await h.client.completeRun(companyId, heartbeatRunId, { status: 'succeeded' });
  const leases = await h.store.listLeases(companyId);
  expect(leases.every((l) => l.status === 'released' && l.cleanupStatus === 'success')).toBe(true);
  expect(sandboxesOf(h.dataDir)).toEqual([]);
  expect(sandboxesOf(hostB.dataDir)).toEqual([]);
});

it('retained leases are released on the host that holds their sandboxes; the probe runs on a worker', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const runs = Array.from({ length: 6 }, (_, i) => `kept-${i}`);
  for (const heartbeatRunId of runs) {
    await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId, environmentId: env.id, leasePolicy: 'retain_on_failure' }),
    );
    await h.client.completeRun(companyId, heartbeatRunId, { status: 'failed', failureReason: 'agent crashed' });
  }
  const retained = await h.store.listLeases(companyId, 'retained');
  expect(retained).toHaveLength(runs.length);
  // The admin API runs no driver: each release is carried out by the lease's own host.
  for (const lease of retained) {
    expect(await h.admin.releaseRetainedLease(companyId, lease.id)).toMatchObject({
      status: 'released',
      cleanupStatus: 'success',
    });
  }
  expect(sandboxesOf(h.dataDir)).toEqual([]);
  expect(sandboxesOf(hostB.dataDir)).toEqual([]);
  // The probe runs on a worker too.
  expect((await h.admin.probeEnvironment(companyId, env.id)).ok).toBe(true);
});
