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

// What dev started is stopped however dev goes: Ctrl+C (SIGINT to the terminal's foreground group), SIGTERM,
// SIGHUP (the terminal closed), its output closed (EPIPE: `npm run dev | tee dev.log`, tee gone first), or an
// error half-way through the start. Each part is registered as it starts and stopped in reverse order.
const stops: Array<{ what: string; stop: () => Promise<unknown> }> = [];
let stopReason: string | null = null;
let wakeUp: () => void = () => undefined;
const stopRequested = new Promise<void>((resolveStop) => (wakeUp = resolveStop));
// Once output is gone, writing again would only fail again: the rest is silent.
let outputOpen = true;

class Stopping extends Error {}

function requestStop(reason: string): void {
  if (stopReason !== null) return;
  stopReason = reason;
  wakeUp();
}

/** Registers how to stop what just started; throws when a stop was asked for meanwhile (the start ends). */
function started(what: string, stop: () => Promise<unknown>): void {
  stops.push({ what, stop });
  if (stopReason !== null) throw new Stopping(stopReason);
}

/** Waits for `work`, or gives up on it when a stop is asked for (what it waits on is stopped next). */
function unlessStopped<T>(work: Promise<T>): Promise<T> {
  return Promise.race([work, stopRequested.then(() => Promise.reject(new Stopping(stopReason ?? 'stop')))]);
}

let stopping: Promise<void> | null = null;
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    for (const { what, stop } of stops.reverse()) {
      try {
        await stop();
      } catch (err) {
        complain(`stopping ${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  })();
  return stopping;
}

function show(line: string): void {
  if (outputOpen) console.log(line);
}

const say = (line: string) => show(`[envrun dev] ${line}`);

function complain(line: string): void {
  if (outputOpen) console.error(`[envrun dev] ${line}`);
}

// The handlers stay installed through the stop: Ctrl+C reaches every process of the foreground group and npm
// relays it once more, and a second Ctrl+C must not end dev half-way through stopping.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => requestStop(signal));
let failed = false;
process.on('uncaughtException', (err) => {
  failed = true;
  complain(`unexpected error: ${err.stack ?? err.message}`);
  requestStop('error');
});
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    outputOpen = false;
    requestStop(err.code === 'EPIPE' ? 'output closed' : `output failed: ${err.message}`);
  });
}

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
    const dev = server;
    started('the Temporal dev server', () => dev.stop());
    uiUrl = server.uiUrl!;
  }
  // The embedded store's daemon is shared and detached: dev stops it only when dev started it.
  const storeWasRunning = Boolean(readStoreInfo(config.dataDir));
  say(config.databaseUrl ? 'using DATABASE_URL' : `embedded PostgreSQL in ${join(config.dataDir, 'pg')}`);
  if (!storeWasRunning && !config.databaseUrl)
    stops.push({ what: 'the embedded PostgreSQL', stop: () => stopEmbeddedStore(config.dataDir) });
  const deps = await createRuntimeDeps(config, { log: say });
  started('the store connections', () => deps.close());
  const connection = await NativeConnection.connect(config.temporal.connection);
  started('the worker connection', () => connection.close());
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
  started('the worker', async () => {
    if (worker.shared.getState() === 'RUNNING') worker.shutdown();
    await running.catch(() => undefined);
  });
  say(`worker polling task queue ${config.taskQueue}`);

  const clientConnection = await Connection.connect(config.temporal.connection);
  started('the client connection', () => clientConnection.close());
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
  const result = await unlessStopped(
    client.startRunAndWaitReady({
      companyId,
      heartbeatRunId,
      environmentId: environment.id,
      adapterType: 'process',
      workspace: { baseCwd: workspace, cwd: workspace },
      runtimeOverlay: { provisionCommand: 'echo provisioned > .provisioned && ls -a' },
    }),
  );
  const state = await client.getRun(companyId, heartbeatRunId);
  const workflowId = state!.workflowId;
  say(`run is READY: target ${JSON.stringify(result.executionTarget)}`);
  show('');
  show(
    `  Temporal Web UI:  ${uiUrl}/namespaces/${config.temporal.namespace}/workflows/${encodeURIComponent(workflowId)}`,
  );
  show(`  workflow id:      ${workflowId}`);
  show(`  try:              npx envrun run exec --company ${companyId} --run ${heartbeatRunId} -- cat .provisioned`);
  show(`                    npx envrun run complete --company ${companyId} --run ${heartbeatRunId}`);
  show('');

  if (process.env.ENVRUN_DEV_EXIT_AFTER_DEMO === '1') {
    await client.completeRun(companyId, heartbeatRunId, { status: 'succeeded' });
    say('demo run completed and released');
    return;
  }
  say('running; Ctrl+C stops the worker, the dev server and the embedded store');
  await stopRequested;
}

// Whatever ended main (done, a stop asked for, an error), what started is stopped before the process exits.
void main()
  .then(
    () => 0,
    (err: unknown) => {
      // Asked to stop half-way through the start: what failed then was cut short by the stop.
      if (err instanceof Stopping || stopReason !== null) return 0;
      complain(err instanceof Error ? err.message : String(err));
      return 1;
    },
  )
  .then(async (code) => {
    say(`stopping${stopReason ? ` (${stopReason})` : ''}`);
    await stopAll();
    process.exit(failed ? 1 : code);
  });
