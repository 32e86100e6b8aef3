// A worker as its own process (worker/main.ts through tsx), for tests that kill it: its environment on
// the suite's dev server and a fresh database, started and awaited until it says it is polling.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { Store } from '../../store/store.js';
import type { freshDatabase } from './harness.js';

const MAIN = fileURLToPath(new URL('../../worker/main.ts', import.meta.url));

/** Starts a worker process with `env`; `ready` settles when it polls. Every child is kept in `into`. */
export function startWorkerProcess(
  env: Record<string, string>,
  into: ChildProcess[],
): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), MAIN], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
  });
  into.push(child);
  let out = '';
  const ready = new Promise<void>((resolve) =>
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('worker on ')) resolve();
    }),
  );
  child.stderr!.resume();
  return { child, ready };
}

/**
 * The environment of a worker on its own task queue (and data folder) over `db`, and a runs client and an
 * admin beside it. `close()` closes the client's connection.
 */
export async function workerSetup(db: Awaited<ReturnType<typeof freshDatabase>>, taskQueue: string) {
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
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const store = new Store(db.db);
  const client = new EnvRunClient({ client: new Client({ connection }), taskQueue, runDefaults: { awaitRetryMs: 0 } });
  const admin = new EnvRunAdmin({ runs: client, store, drivers: createDrivers(createProviders({ dataDir })) });
  return { env, dataDir, store, client, admin, close: () => connection.close() };
}
