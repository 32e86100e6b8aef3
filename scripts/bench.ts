// `npm run bench`: figures, not timed tests. One dev server, one machine, one run: the bare Temporal
// baseline, envrun, the same steps in-process (no Temporal), bubblewrap realize→first command, and a scale
// series of runs held at ready. Prints a table and writes JSON under bench/results/.
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import { defineUpdate } from '@temporalio/workflow';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDrivers } from '../activities/drivers/registry.js';
import { createActivities } from '../activities/index.js';
import { createDatabaseIfMissing, openDatabase } from '../activities/store/db.js';
import { ensureEmbeddedStore, stopEmbeddedStore } from '../activities/store/embedded.js';
import { Store } from '../activities/store/store.js';
import { EnvRunClient } from '../client/client.js';
import { createProviders } from '../worker/deps.js';
import { startDevServer } from './dev-server.js';

// The bare baseline's updates (scripts/bench-workflows.ts), by name: workflow modules stay out of this process.
const bareReady = defineUpdate<string>('waitReady');
const bareComplete = defineUpdate<string>('complete');
const N = Number(process.env.BENCH_RUNS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10);
const SCALE = (process.env.BENCH_SCALE ?? '1,10,100,1000').split(',').map(Number);

interface Series { name: string; latenciesMs: number[]; wallMs: number; peakRssMb: number }

let peakRss = 0;
const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
const mb = (b: number) => Math.round(b / 1024 / 1024);
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)]! * 10) / 10 : NaN;
};

async function measure(name: string, one: (i: number) => Promise<number>): Promise<Series> {
  peakRss = process.memoryUsage().rss;
  const latenciesMs: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < N) latenciesMs.push(await one(next++));
  }));
  return { name, latenciesMs, wallMs: performance.now() - started, peakRssMb: mb(peakRss) };
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-bench-'));
  chmodSync(tmp, 0o755); // the embedded server runs as an unprivileged user when we are root
  const server = await startDevServer({ headless: true, logFile: join(tmp, 'temporal.log') });
  const adminUrl = await ensureEmbeddedStore(join(tmp, 'store'));
  await createDatabaseIfMissing(adminUrl, 'bench');
  const url = new URL(adminUrl);
  url.pathname = '/bench';
  const database = await openDatabase(url.toString(), 20);
  const store = new Store(database.db);
  const dataDir = join(tmp, 'data');
  const providers = createProviders({ dataDir });
  const drivers = createDrivers(providers);
  const connection = await NativeConnection.connect({ address: server.address });
  const clientConnection = await Connection.connect({ address: server.address });
  const temporal = new Client({ connection: clientConnection });
  const { code } = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./bench-workflows.ts', import.meta.url)), logger: new DefaultLogger('WARN') });
  const deps = { store, drivers, temporal };
  const worker = await Worker.create({
    connection, taskQueue: 'bench', workflowBundle: { code },
    activities: { ...createActivities(deps), noop: async (s: string) => s },
    maxConcurrentActivityTaskExecutions: 200, maxCachedWorkflows: 2000,
  });
  const running = worker.run();
  const client = new EnvRunClient({ client: temporal, store, taskQueue: 'bench', drivers, runDefaults: { awaitRetryMs: 0 } });
  const env = await client.createEnvironment({ companyId: 'bench', name: 'fake', driver: 'sandbox', config: { provider: 'fake' } });
  const cwd = mkdtempSync(join(tmpdir(), 'bench-ws-'));
  const results: Record<string, unknown> = { runs: N, concurrency: CONCURRENCY, machine: `${process.platform} ${process.arch}, node ${process.version}` };

  // Warm-up (bundle caches, connections, JIT) outside the figures.
  for (let i = 0; i < 5; i++) {
    await client.startRunAndWaitReady({ companyId: 'bench', heartbeatRunId: `warm-${i}`, environmentId: env.id, workspace: { baseCwd: cwd, cwd } });
    await client.completeRun('bench', `warm-${i}`, { status: 'succeeded' });
  }

  const bare = await measure('bare', async (i) => {
    const t = performance.now();
    const op = new WithStartWorkflowOperation('benchBare', { workflowId: `bare-${i}-${Date.now()}`, taskQueue: 'bench', workflowIdConflictPolicy: 'FAIL', args: [] });
    await temporal.workflow.executeUpdateWithStart(bareReady, { startWorkflowOperation: op });
    const latency = performance.now() - t;
    await (await op.workflowHandle()).executeUpdate(bareComplete);
    return latency;
  });
  const envrun = await measure('envrun', async (i) => {
    const t = performance.now();
    await client.startRunAndWaitReady({ companyId: 'bench', heartbeatRunId: `run-${i}`, environmentId: env.id, workspace: { baseCwd: cwd, cwd } });
    const latency = performance.now() - t;
    await client.completeRun('bench', `run-${i}`, { status: 'succeeded' });
    return latency;
  });
  const acts = createActivities(deps);
  const inProcess = await measure('in-process', async (i) => {
    const env0 = new MockActivityEnvironment({ attempt: 1, workflowExecution: { workflowId: `inproc-${i}`, runId: 'r' } } as never);
    const mock = { run: <A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A) => env0.run(fn, ...args) as Promise<R> };
    const t = performance.now();
    const { request, environment, executionWorkspace } = await mock.run(acts.resolveEnvironment, { companyId: 'bench', heartbeatRunId: `inproc-${i}`, environmentId: env.id, workspace: { baseCwd: cwd, cwd } });
    const lease = await mock.run(acts.acquireLease, { request, environment });
    await mock.run(acts.logActivity, { eventKey: `inproc-${i}:a`, companyId: 'bench', action: 'environment.lease_acquired', entityType: 'environment_lease' as const, entityId: lease.id, agentId: null, runId: request.heartbeatRunId, details: {} });
    const realized = await mock.run(acts.realizeWorkspace, { request, environment, lease, executionWorkspace });
    const stored = await mock.run(acts.persistMetadata, { environment, lease, executionWorkspaceId: null, realizationRequest: realized.realizationRequest, record: realized.record });
    await mock.run(acts.resolveTarget, { environment, lease: stored.lease, record: realized.record });
    await mock.run(acts.logActivity, { eventKey: `inproc-${i}:r`, companyId: 'bench', action: 'environment.workspace_realized', entityType: 'environment_lease' as const, entityId: lease.id, agentId: null, runId: request.heartbeatRunId, details: {} });
    const latency = performance.now() - t;
    await mock.run(acts.releaseLease, { companyId: 'bench', heartbeatRunId: request.heartbeatRunId, leaseId: lease.id, outcome: 'succeeded', failureReason: null, finalAttempt: 1 });
    return latency;
  });
  const bwrap = providers.get('bubblewrap')!;
  const bwConfig = bwrap.validateConfig({ provider: 'bubblewrap' });
  const sandbox = await measure('sandbox', async (i) => {
    const ctx = { environmentId: env.id, heartbeatRunId: `bw-${i}`, attempt: 1 };
    const lease = await bwrap.acquireLease(bwConfig, { ...ctx, idempotencyKey: `bw-${i}`, reuseKey: null });
    const t = performance.now();
    await bwrap.realizeWorkspace(bwConfig, { ...ctx, providerLeaseId: lease.providerLeaseId, localPath: cwd });
    const res = await bwrap.execute(bwConfig, { ...ctx, providerLeaseId: lease.providerLeaseId }, { command: 'true', args: [], env: {}, timeoutMs: 10_000 });
    const latency = performance.now() - t;
    if (res.exitCode !== 0) throw new Error(`bwrap: ${res.stderr}`);
    await bwrap.releaseLease(bwConfig, { ...ctx, providerLeaseId: lease.providerLeaseId, keep: false });
    return latency;
  });

  const row = (s: Series) => ({
    mode: s.name, runsPerSec: Math.round((N / s.wallMs) * 1000 * 10) / 10,
    p50: pct(s.latenciesMs, 50), p95: pct(s.latenciesMs, 95), p99: pct(s.latenciesMs, 99), peakRssMb: s.peakRssMb,
  });
  const table = [bare, envrun, inProcess, sandbox].map(row);
  results.modes = table;
  results.ratios = {
    envrunOverBareP50: Math.round((table[1]!.p50 / table[0]!.p50) * 100) / 100,
    envrunOverInProcessP50: Math.round((table[1]!.p50 / table[2]!.p50) * 100) / 100,
    envrunOverBareThroughput: Math.round((table[1]!.runsPerSec / table[0]!.runsPerSec) * 100) / 100,
  };

  // Scale: N runs held at ready at once (leases held), RSS at each step.
  const scale: Array<{ held: number; rssMb: number; secondsToReady: number }> = [];
  for (const held of SCALE) {
    const ids = Array.from({ length: held }, (_, i) => `held-${held}-${i}`);
    const t = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(50, held) }, async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        await client.startRunAndWaitReady({ companyId: 'bench', heartbeatRunId: id, environmentId: env.id, workspace: { baseCwd: cwd, cwd } });
      }
    }));
    const secondsToReady = Math.round((performance.now() - t) / 100) / 10;
    global.gc?.();
    scale.push({ held, rssMb: mb(process.memoryUsage().rss), secondsToReady });
    next = 0;
    await Promise.all(Array.from({ length: Math.min(50, held) }, async () => {
      while (next < ids.length) await client.completeRun('bench', ids[next++]!, { status: 'succeeded' });
    }));
  }
  results.scale = scale;

  console.log(`\nenvrun bench: ${N} runs per mode at concurrency ${CONCURRENCY} (one process: worker + client)\n`);
  console.table(table);
  console.log('ratios', results.ratios);
  console.log('\nscale (runs held at ready at once; RSS of the worker+client process):');
  console.table(scale);
  mkdirSync('bench/results', { recursive: true });
  const file = join('bench/results', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`\nwritten ${file}`);

  clearInterval(rssTimer);
  worker.shutdown();
  await running;
  await clientConnection.close();
  await connection.close();
  await database.close();
  await server.stop();
  await stopEmbeddedStore(join(tmp, 'store'));
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
