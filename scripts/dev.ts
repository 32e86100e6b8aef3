// `npm run dev`: the whole thing on one machine with the embedded defaults. Provides the Temporal CLI,
// starts the dev server with the Web UI, the embedded PostgreSQL, a worker, creates a demo environment and
// runs a demo run to ready, then prints the UI address and the run's workflow id. Ctrl+C stops it all.
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readStoreInfo, stopEmbeddedStore } from '../store/embedded.js';
import { EnvRunAdmin } from '../client/admin.js';
import { installReaperSchedule } from '../client/reaper-schedule.js';
import { EnvRunClient } from '../client/runs.js';
import { loadConfig } from '../worker/config.js';
import { createRuntimeDeps } from '../worker/deps.js';
import { ensureSearchAttributes } from '../worker/search-attributes.js';
import { bundleWorkflowsInChildProcess, createWorker } from '../worker/worker.js';
import { startDevServer, type DevServer } from './dev-server.js';

const say = (line: string) => console.log(`[envrun dev] ${line}`);

async function serverAnswers(address: string): Promise<boolean> {
  try {
    const conn = await Connection.connect({ address, connectTimeout: 1000 });
    await conn.workflowService.getSystemInfo({});
    await conn.close();
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
  mkdirSync(config.dataDir, { recursive: true });
  const uiPort = Number(process.env.ENVRUN_UI_PORT ?? 8233);
  const [ip, portText] = config.temporal.address.split(':');
  let server: DevServer | null = null;
  let uiUrl = `http://${ip}:${uiPort}`;
  if (await serverAnswers(config.temporal.address)) {
    say(`using the Temporal server already on ${config.temporal.address}`);
  } else {
    say(
      `starting the Temporal dev server on ${config.temporal.address} (history in ${join(config.dataDir, 'temporal.db')})`,
    );
    server = await startDevServer({
      ip,
      port: Number(portText),
      uiPort,
      dbFilename: join(config.dataDir, 'temporal.db'),
      logFile: join(config.dataDir, 'temporal.log'),
    });
    uiUrl = server.uiUrl!;
  }
  const storeWasRunning = Boolean(readStoreInfo(config.dataDir));
  say(config.databaseUrl ? 'using DATABASE_URL' : `embedded PostgreSQL in ${join(config.dataDir, 'pg')}`);
  const deps = await createRuntimeDeps(config, { log: say });
  const connection = await NativeConnection.connect(config.temporal.connection);
  await ensureSearchAttributes(connection, config.temporal.namespace);
  deps.temporal = new Client({ connection, namespace: config.temporal.namespace });
  if (config.reaperEvery) await installReaperSchedule(deps.temporal, config.taskQueue, config.reaperEvery);
  // Bundled in a child process: webpack stays out of this one (worker/worker.ts).
  const bundle = config.workflowBundle ? null : await bundleWorkflowsInChildProcess();
  const worker = await createWorker({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: config.taskQueue,
    deps,
    workflowBundlePath: config.workflowBundle ?? bundle!.path,
    shutdownGraceMs: 2000,
    maxCachedWorkflows: config.maxCachedWorkflows,
  }).finally(() => bundle?.remove());
  const running = worker.run();
  say(`worker polling task queue ${config.taskQueue}`);

  const clientConnection = await Connection.connect(config.temporal.connection);
  const client = new EnvRunClient({
    client: new Client({ connection: clientConnection, namespace: config.temporal.namespace }),
    taskQueue: config.taskQueue,
  });
  const admin = new EnvRunAdmin({ runs: client, store: deps.store, drivers: deps.drivers });
  const companyId = 'demo';
  const existing = (await admin.listEnvironments(companyId)).find(
    (e) => e.name === 'demo-sandbox' && e.status === 'active',
  );
  const environment =
    existing ??
    (await admin.createEnvironment({
      companyId,
      name: 'demo-sandbox',
      driver: 'sandbox',
      config: { provider: 'fake' },
    }));
  // Beside the data folder, not in it: no run may use the data folder (it holds the store's credentials).
  const workspace = `${config.dataDir}-demo-workspace`;
  mkdirSync(workspace, { recursive: true });
  writeFileSync(join(workspace, 'README.md'), '# demo workspace\n\nCopied into a fake sandbox by envrun.\n');
  const heartbeatRunId = `demo-${Date.now()}`;
  say(`demo environment ${environment.id} (sandbox/fake); starting run ${heartbeatRunId}`);
  const result = await client.startRunAndWaitReady({
    companyId,
    heartbeatRunId,
    environmentId: environment.id,
    adapterType: 'process',
    workspace: { baseCwd: workspace, cwd: workspace },
    runtimeOverlay: { provisionCommand: 'echo provisioned > .provisioned && ls -a' },
  });
  const state = await client.getRun(companyId, heartbeatRunId);
  const workflowId = state!.workflowId;
  say(`run is READY: target ${JSON.stringify(result.executionTarget)}`);
  console.log('');
  console.log(
    `  Temporal Web UI:  ${uiUrl}/namespaces/${config.temporal.namespace}/workflows/${encodeURIComponent(workflowId)}`,
  );
  console.log(`  workflow id:      ${workflowId}`);
  console.log(
    `  try:              npx envrun run exec --company ${companyId} --run ${heartbeatRunId} -- cat .provisioned`,
  );
  console.log(`                    npx envrun run complete --company ${companyId} --run ${heartbeatRunId}`);
  console.log('');

  const shutdown = async () => {
    say('stopping');
    worker.shutdown();
    await running.catch(() => undefined);
    await clientConnection.close();
    await connection.close();
    await deps.close();
    if (server) await server.stop();
    if (!storeWasRunning && !config.databaseUrl) await stopEmbeddedStore(config.dataDir);
  };
  if (process.env.ENVRUN_DEV_EXIT_AFTER_DEMO === '1') {
    await client.completeRun(companyId, heartbeatRunId, { status: 'succeeded' });
    say('demo run completed and released');
    await shutdown();
    return;
  }
  say('running; Ctrl+C stops the worker, the dev server and the embedded store');
  // Ctrl+C reaches every process of the terminal's foreground group, and tsx relays it once more: the
  // handlers stay installed through shutdown, so a second signal cannot kill the process half-way.
  await new Promise<void>((resolveStop) => {
    process.on('SIGINT', () => resolveStop());
    process.on('SIGTERM', () => resolveStop());
  });
  await shutdown();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`[envrun dev] ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
