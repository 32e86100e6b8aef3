// Fault: the worker is killed (SIGKILL) while realization runs; a new worker finishes the run. Then the audit.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';
import { startWorkerProcess, workerSetup } from '../support/worker-process.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
const workers: ChildProcess[] = [];
beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await db?.close();
});

it('kill -9 during realization: a new worker finishes the run, exactly one lease and one sandbox', async () => {
  const { env, dataDir, store, client, admin, close } = await workerSetup(db, uniqueId('kill'));
  const first = startWorkerProcess(env, workers);
  await first.ready;
  const companyId = uniqueId('co');
  const sandboxEnv = await admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const req = runRequest({
    companyId,
    environmentId: sandboxEnv.id,
    runtimeOverlay: { provisionCommand: 'sleep 2; echo done > provisioned' },
  });
  await client.startRun(req);
  await until('realizing', async () => (await client.getRun(companyId, req.heartbeatRunId))?.phase === 'realizing');
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));

  const second = startWorkerProcess(env, workers);
  await second.ready;
  // The realize attempt on the dead worker times out on its heartbeat (20 s) and is retried here.
  const result = await client.waitReady(companyId, req.heartbeatRunId);
  expect(result.executionTarget).toMatchObject({ transport: 'sandbox' });
  await client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  const outcomes = await audit({ client, store, fakeRoot: join(dataDir, 'sandboxes', 'fake') }, companyId, [
    req.heartbeatRunId,
  ]);
  expect([...outcomes.values()]).toEqual(['completed']);
  second.child.kill('SIGTERM');
  await new Promise((r) => second.child.once('exit', r));
  await close();
}, 120_000);
