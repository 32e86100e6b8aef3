// Fault: the worker is killed (SIGKILL) while realization runs; a new worker finishes the run. Then the audit.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDrivers } from '../../drivers/registry.js';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { Store } from '../../store/store.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { createProviders } from '../../drivers/providers/load.js';
import { audit } from '../support/audit.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';

const MAIN = fileURLToPath(new URL('../../worker/main.ts', import.meta.url));
let db: Awaited<ReturnType<typeof freshDatabase>>;
const workers: ChildProcess[] = [];
beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
  await db?.close();
});

function startWorker(env: Record<string, string>): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), MAIN], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
  });
  workers.push(child);
  let out = '';
  const ready = new Promise<void>((resolve) =>
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('worker on ')) resolve();
    }),
  );
  return { child, ready };
}

it('kill -9 during realization: a new worker finishes the run, exactly one lease and one sandbox', async () => {
  const taskQueue = uniqueId('kill');
  const dataDir = join(inject('tmpRoot'), taskQueue);
  const env = {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: db.url,
    ENVRUN_TASK_QUEUE: taskQueue,
    ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
    ENVRUN_LOG_LEVEL: 'INFO', // the start line is an info line
    ENVRUN_REAPER_EVERY: 'off',
    ENVRUN_DATA_DIR: dataDir,
  };
  const first = startWorker(env);
  await first.ready;
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const store = new Store(db.db);
  const client = new EnvRunClient({ client: new Client({ connection }), taskQueue, runDefaults: { awaitRetryMs: 0 } });
  const admin = new EnvRunAdmin({ runs: client, store, drivers: createDrivers(createProviders({ dataDir })) });
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

  const second = startWorker(env);
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
  await connection.close();
}, 120_000);
