// A real worker on the suite's Temporal dev server, over a fresh database and a fake provider root.
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type WorkerOptions } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { createDrivers } from '../../drivers/registry.js';
import { createDatabaseIfMissing, openDatabase, type Database } from '../../store/db.js';
import { Store } from '../../store/store.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { loadProviders } from '../../drivers/providers/load.js';
import { createEgressSupervisor } from '../../drivers/egress/supervisor.js';
import { egressAuditSink } from '../../worker/egress-audit.js';
import { loadPlugins } from '../../drivers/plugins/load.js';
import { createWorker, type EnvRunWorker } from '../../worker/worker.js';
import type { Tenancy } from '../../config/tenancy.js';

let runtimeInstalled = false;
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // already installed in this process
  }
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A fresh database on the given server (the suite's embedded one by default), migrated. */
export async function freshDatabase(adminUrl: string = inject('embeddedPgUrl')): Promise<Database & { url: string }> {
  const name = `t_${randomUUID().replace(/-/g, '').slice(0, 20)}`;
  await createDatabaseIfMissing(adminUrl, name);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const database = await openDatabase(url.toString(), 5);
  return { ...database, url: url.toString() };
}

/** A host whose queue saw no poll for this long is gone (the test server's long polls last 10 s). */
export const TEST_HOST_STALE_MS = 25_000;

export interface Harness {
  /** Runs, through Temporal only. */
  client: EnvRunClient;
  /** Environments, workspaces, leases, probe and exec, over `store` and the worker's drivers. */
  admin: EnvRunAdmin;
  store: Store;
  database: Database & { url: string };
  /** The worker's ENVRUN_DATA_DIR: a CLI given the same one finds the same sandboxes. */
  dataDir: string;
  fakeRoot: string;
  taskQueue: string;
  worker: EnvRunWorker;
  close(): Promise<void>;
}

export interface HarnessOptions {
  providerModules?: string[];
  /** Paperclip plugin packages to load, as ENVRUN_PAPERCLIP_PLUGINS does. */
  paperclipPlugins?: string[];
  /** Plugin modules to load, as ENVRUN_PLUGIN_MODULES does. */
  pluginModules?: string[];
  temporalAddress?: string;
  /** The PostgreSQL server for the fresh database (the suite's embedded one by default). */
  adminUrl?: string;
  /** More Worker options (interceptors, for instance). */
  workerExtra?: Partial<WorkerOptions>;
  /** The deployment's tenancy settings for the worker and the admin API (default: the process's). */
  tenancy?: Tenancy;
  /** The worker's host: it also polls that host's queue (default: a fresh id; null: no host queue). */
  hostId?: string | null;
}

export async function createHarness(options: HarnessOptions = {}): Promise<Harness> {
  quietRuntime();
  const database = await freshDatabase(options.adminUrl);
  const store = new Store(database.db);
  const dataDir = join(inject('tmpRoot'), uniqueId('data'));
  const fakeRoot = join(dataDir, 'sandboxes', 'fake');
  mkdirSync(fakeRoot, { recursive: true });
  // The worker's egress proxy, as worker/deps.ts makes it (its process starts at the first allowlist command).
  const egress = createEgressSupervisor();
  egress.setAuditSink(egressAuditSink(store));
  const providers = await loadProviders(
    {
      dataDir,
      providerModules: options.providerModules ?? [],
      paperclipPlugins: options.paperclipPlugins ?? [],
    },
    { egress },
  );
  const plugins = await loadPlugins({ dataDir, pluginModules: options.pluginModules ?? [] });
  const drivers = createDrivers(providers, plugins);
  const address = options.temporalAddress ?? inject('temporalAddress');
  const nativeConnection = await NativeConnection.connect({ address });
  const taskQueue = uniqueId('test');
  const connection = await Connection.connect({ address });
  const temporal = new Client({ connection });
  const worker = await createWorker({
    connection: nativeConnection,
    namespace: 'default',
    taskQueue,
    deps: {
      store,
      drivers,
      provisionTimeoutMs: 30_000,
      temporal,
      ...(options.tenancy ? { tenancy: options.tenancy } : {}),
      ...(options.hostId === null ? {} : { hostId: options.hostId ?? uniqueId('host') }),
      hostStaleMs: TEST_HOST_STALE_MS,
    },
    workflowBundlePath: inject('workflowBundle'),
    shutdownGraceMs: 1000,
    ...(options.workerExtra ? { extra: options.workerExtra } : {}),
  });
  const running = worker.run();
  // The seed's semantics: a spent realization ends the run (ops tests opt in to awaiting_retry per run).
  const client = new EnvRunClient({ client: temporal, taskQueue, runDefaults: { awaitRetryMs: 0 } });
  const admin = new EnvRunAdmin({
    runs: client,
    store,
    drivers,
    ...(options.tenancy ? { tenancy: options.tenancy } : {}),
  });
  return {
    client,
    admin,
    store,
    database,
    dataDir,
    fakeRoot,
    taskQueue,
    worker,
    async close() {
      worker.shutdown();
      await running;
      await connection.close();
      await nativeConnection.close();
      await providers.close();
      await egress.stop(); // its last audit rows go to the store first
      await database.close();
    },
  };
}
