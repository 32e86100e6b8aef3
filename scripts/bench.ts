// `npm run bench`: figures, not timed tests. One dev server, one machine, one run: the bare Temporal
// baseline, envrun, the same steps in-process (no Temporal), bubblewrap realize→first command, a scale
// series of runs held at ready, and each target checked. Workers run in their own processes (envrun's is
// the real `worker/main.ts`), so "worker RSS" is the worker's alone. Prints tables; writes JSON under
// bench/results/.
import { Client, Connection, WithStartWorkflowOperation, type WorkflowHandle } from '@temporalio/client';
import { defineUpdate } from '@temporalio/workflow';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDrivers } from '../drivers/registry.js';
import { createActivities } from '../activities/index.js';
import { ACTIVITY_ACTIONS, leaseEventRow, type ActivityAction } from '../contracts/index.js';
import { createDatabaseIfMissing, openDatabase } from '../store/db.js';
import { ensureEmbeddedStore, stopEmbeddedStore, tsxLoaderUrl } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { DEFAULT_MAX_CACHED_WORKFLOWS } from '../worker/config.js';
import { createProviders } from '../drivers/providers/load.js';
import { bundleWorkflows } from './bundle-workflows.js';
import { startDevServer } from './dev-server.js';

// The bare baseline's updates (scripts/bench-workflows.ts), by name: workflow modules stay out of this process.
const bareReady = defineUpdate<string>('waitReady');
const bareComplete = defineUpdate<string>('complete');
const N = Number(process.env.BENCH_RUNS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10);
const CEILING_CONCURRENCY = Number(process.env.BENCH_CEILING_CONCURRENCY ?? 50);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const SCALE = (process.env.BENCH_SCALE ?? '1,10,100,1000').split(',').map(Number);
const CACHE = Number(process.env.ENVRUN_MAX_CACHED_WORKFLOWS ?? DEFAULT_MAX_CACHED_WORKFLOWS);

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024);
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)]! * 10) / 10 : NaN;
};
const round2 = (x: number) => Math.round(x * 100) / 100;

/** Resident memory of one process (from /proc), sampled every 50 ms; `peak` since the last reset. */
class RssProbe {
  peak = 0;
  private timer: NodeJS.Timeout;
  constructor(readonly pid: number) {
    this.timer = setInterval(() => (this.peak = Math.max(this.peak, this.now())), 50);
  }
  now(): number {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    } catch {
      return 0;
    }
  }
  reset(): void {
    this.peak = this.now();
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** CPU time (user + system, all threads) a process has used so far, in ms, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in USER_HZ (100/s)
  } catch {
    return NaN;
  }
}

function spawnWorker(
  script: string,
  env: Record<string, string>,
  logFile: string,
  nodeArgs: string[] = [],
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...nodeArgs, '--import', tsxLoaderUrl(), script], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (c: Buffer) => {
      out = (out + c.toString()).slice(-65_536);
      appendFileSync(logFile, c);
      if (out.includes('worker on ')) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`worker ${script} exited with ${code}: ${out.slice(-2000)}`)));
  });
}

interface Series {
  mode: string;
  concurrency: number;
  runs: number;
  latenciesMs: number[];
  wallMs: number;
  peakRssMb: number;
  rssOf: string;
  /** CPU used per run by the process measured (rssOf) and by the Temporal dev server. */
  cpuMsPerRun: number;
  serverCpuMsPerRun: number;
}

let serverPid = 0;
async function measure(
  mode: string,
  rss: RssProbe,
  rssOf: string,
  concurrency: number,
  one: (i: number) => Promise<number>,
  runs = N,
  first = 0,
): Promise<Series> {
  rss.reset();
  const latenciesMs: number[] = [];
  let next = first;
  const end = first + runs;
  const cpu0 = cpuMs(rss.pid);
  const server0 = cpuMs(serverPid);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < end) latenciesMs.push(await one(next++));
    }),
  );
  const wallMs = performance.now() - started;
  return {
    mode,
    concurrency,
    runs,
    latenciesMs,
    wallMs,
    peakRssMb: mb(rss.peak),
    rssOf,
    cpuMsPerRun: Math.round(((cpuMs(rss.pid) - cpu0) / runs) * 10) / 10,
    serverCpuMsPerRun: Math.round(((cpuMs(serverPid) - server0) / runs) * 10) / 10,
  };
}

/** One series out of several rounds of the same mode: latencies pooled, time and CPU added up. */
function pooled(rounds: Series[]): Series {
  const runs = rounds.reduce((n, r) => n + r.runs, 0);
  const weighted = (f: (r: Series) => number) =>
    Math.round((rounds.reduce((t, r) => t + f(r) * r.runs, 0) / runs) * 10) / 10;
  return {
    ...rounds[0]!,
    runs,
    latenciesMs: rounds.flatMap((r) => r.latenciesMs),
    wallMs: rounds.reduce((t, r) => t + r.wallMs, 0),
    peakRssMb: Math.max(...rounds.map((r) => r.peakRssMb)),
    cpuMsPerRun: weighted((r) => r.cpuMsPerRun),
    serverCpuMsPerRun: weighted((r) => r.serverCpuMsPerRun),
  };
}

const row = (s: Series) => ({
  mode: s.mode,
  concurrency: s.concurrency,
  runsPerSec: Math.round((s.runs / s.wallMs) * 1000 * 10) / 10,
  p50: pct(s.latenciesMs, 50),
  p95: pct(s.latenciesMs, 95),
  p99: pct(s.latenciesMs, 99),
  peakRssMb: s.peakRssMb,
  rssOf: s.rssOf,
  cpuMsPerRun: s.cpuMsPerRun,
  serverCpuMsPerRun: s.serverCpuMsPerRun,
});

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-bench-'));
  chmodSync(tmp, 0o755); // the embedded server runs as an unprivileged user when we are root
  const children: ChildProcess[] = [];
  const server = await startDevServer({ headless: true, logFile: join(tmp, 'temporal.log') });
  serverPid = server.process.pid!;
  const adminUrl = await ensureEmbeddedStore(join(tmp, 'store'));
  await createDatabaseIfMissing(adminUrl, 'bench');
  const url = new URL(adminUrl);
  url.pathname = '/bench';
  const database = await openDatabase(url.toString(), 20);
  const store = new Store(database.db);
  const dataDir = join(tmp, 'data');
  const bundle = await bundleWorkflows(join(tmp, 'workflow-bundle.js'));
  const common = { TEMPORAL_ADDRESS: server.address, ENVRUN_MAX_CACHED_WORKFLOWS: String(CACHE) };
  const [envrunWorker, bareWorker] = await Promise.all([
    spawnWorker(
      fileURLToPath(new URL('../worker/main.ts', import.meta.url)),
      {
        ...common,
        DATABASE_URL: url.toString(),
        ENVRUN_TASK_QUEUE: 'bench',
        ENVRUN_DATA_DIR: dataDir,
        ENVRUN_WORKFLOW_BUNDLE: bundle,
        ENVRUN_REAPER_EVERY: 'off',
        ENVRUN_LOG_LEVEL: 'INFO', // the start line is an info line (and INFO is the default)
      },
      join(tmp, 'envrun-worker.log'),
      [
        ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
        ...(process.env.BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean),
      ],
    ),
    spawnWorker(
      fileURLToPath(new URL('./bench-bare-worker.ts', import.meta.url)),
      { ...common, ENVRUN_TASK_QUEUE: 'bench-bare' },
      join(tmp, 'bare-worker.log'),
    ),
  ]);
  children.push(envrunWorker, bareWorker);
  const envrunRss = new RssProbe(envrunWorker.pid!);
  const bareRss = new RssProbe(bareWorker.pid!);
  const selfRss = new RssProbe(process.pid);

  const providers = createProviders({ dataDir });
  const drivers = createDrivers(providers);
  const clientConnection = await Connection.connect({ address: server.address });
  const temporal = new Client({ connection: clientConnection });
  const client = new EnvRunClient({ client: temporal, taskQueue: 'bench', runDefaults: { awaitRetryMs: 0 } });
  const admin = new EnvRunAdmin({ runs: client, store, drivers });
  const env = await admin.createEnvironment({
    companyId: 'bench',
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const cwd = mkdtempSync(join(tmpdir(), 'bench-ws-'));
  const request = (id: string) => ({
    companyId: 'bench',
    heartbeatRunId: id,
    environmentId: env.id,
    workspace: { baseCwd: cwd, cwd },
  });

  const bareRun = (prefix: string) => async (i: number) => {
    const t = performance.now();
    const op = new WithStartWorkflowOperation('benchBare', {
      workflowId: `${prefix}-${i}`,
      taskQueue: 'bench-bare',
      workflowIdConflictPolicy: 'FAIL',
      args: [],
    });
    await temporal.workflow.executeUpdateWithStart(bareReady, { startWorkflowOperation: op });
    const latency = performance.now() - t;
    await (await op.workflowHandle()).executeUpdate(bareComplete);
    return latency;
  };
  const envrunRun = (prefix: string) => async (i: number) => {
    const t = performance.now();
    await client.startRunAndWaitReady(request(`${prefix}-${i}`));
    const latency = performance.now() - t;
    await client.completeRun('bench', `${prefix}-${i}`, { status: 'succeeded' });
    return latency;
  };
  // Warm-up (bundle caches, connections, JIT) outside the figures.
  await measure('warm-up', bareRss, 'bare worker', CONCURRENCY, bareRun('warm-bare'), 30);
  await measure('warm-up', envrunRss, 'envrun worker', CONCURRENCY, envrunRun('warm'), 30);

  // bare and envrun in interleaved rounds (bare, envrun, bare, envrun), so drift on a noisy machine
  // falls on both alike; each mode's rounds are pooled.
  const interleaved = async (concurrency: number, tag: string, total = N) => {
    const bareRounds: Series[] = [];
    const envrunRounds: Series[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [runs, first] = [Math.ceil(total / ROUNDS), round * Math.ceil(total / ROUNDS)];
      bareRounds.push(await measure('bare', bareRss, 'bare worker', concurrency, bareRun(`bare${tag}`), runs, first));
      envrunRounds.push(
        await measure('envrun', envrunRss, 'envrun worker', concurrency, envrunRun(`run${tag}`), runs, first),
      );
    }
    return [pooled(bareRounds), pooled(envrunRounds)];
  };
  const series: Series[] = [];
  series.push(...(await interleaved(CONCURRENCY, '')));

  const acts = createActivities({ store, drivers, temporal });
  series.push(
    await measure('in-process', selfRss, 'bench process', CONCURRENCY, async (i) => {
      const env0 = new MockActivityEnvironment({
        attempt: 1,
        workflowExecution: { workflowId: `inproc-${i}`, runId: 'r' },
      } as never);
      const run = <A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A) =>
        env0.run(fn, ...args) as Promise<R>;
      const t = performance.now();
      const {
        request: req,
        environment,
        executionWorkspace,
      } = await run(acts.resolveEnvironment, request(`inproc-${i}`));
      const lease = await run(acts.acquireLease, { request: req, environment });
      const logged = (action: ActivityAction) =>
        leaseEventRow({ actor: 'run', scope: `inproc-${i}`, action, lease, details: {} });
      await run(acts.logActivity, logged(ACTIVITY_ACTIONS.leaseAcquired));
      const realized = await run(acts.realizeWorkspace, { request: req, environment, lease, executionWorkspace });
      const stored = await run(acts.persistMetadata, {
        environment,
        lease,
        executionWorkspaceId: null,
        realizationRequest: realized.realizationRequest,
        record: realized.record,
      });
      await run(acts.resolveTarget, { environment, lease: stored.lease, record: realized.record });
      await run(acts.logActivity, logged(ACTIVITY_ACTIONS.workspaceRealized));
      const latency = performance.now() - t;
      await run(acts.releaseLease, {
        companyId: 'bench',
        heartbeatRunId: req.heartbeatRunId,
        leaseId: lease.id,
        outcome: 'succeeded',
        failureReason: null,
        finalAttempt: 1,
      });
      return latency;
    }),
  );

  const bwrap = providers.get('bubblewrap')!;
  const bwConfig = bwrap.validateConfig({ provider: 'bubblewrap' });
  const sandboxRun = (prefix: string) => async (i: number) => {
    const ctx = { environmentId: env.id, heartbeatRunId: `${prefix}-${i}`, attempt: 1 };
    const lease = await bwrap.acquireLease(bwConfig, { ...ctx, idempotencyKey: `${prefix}-${i}`, reuseKey: null });
    const t = performance.now();
    await bwrap.realizeWorkspace(bwConfig, { ...ctx, providerLeaseId: lease.providerLeaseId, localPath: cwd });
    const res = await bwrap.execute(
      bwConfig,
      { ...ctx, providerLeaseId: lease.providerLeaseId },
      { command: 'true', args: [], env: {}, timeoutMs: 10_000 },
    );
    const latency = performance.now() - t;
    if (res.exitCode !== 0) throw new Error(`bwrap: ${res.stderr}`);
    await bwrap.releaseLease(bwConfig, { ...ctx, providerLeaseId: lease.providerLeaseId, keep: false });
    return latency;
  };
  series.push(await measure('sandbox (bwrap)', selfRss, 'bench process', CONCURRENCY, sandboxRun('bw')));
  series.push(await measure('sandbox (bwrap)', selfRss, 'bench process', 1, sandboxRun('bw1')));
  // The dev server's own ceiling: both again at a higher concurrency.
  series.push(...(await interleaved(CEILING_CONCURRENCY, '-ceiling')));
  // One at a time: latency without CPU contention (fewer runs: this is slow by nature).
  series.push(...(await interleaved(1, '-c1', Math.min(N, 40))));

  const table = series.map(row);
  const [bare, envrun, inProcess, sandbox, sandbox1, bareCeiling, envrunCeiling, bare1, envrun1] = table;
  const ratios = {
    envrunOverBareP50: round2(envrun!.p50 / bare!.p50),
    envrunOverBareThroughput: round2(envrun!.runsPerSec / bare!.runsPerSec),
    envrunOverInProcessP50: round2(envrun!.p50 / inProcess!.p50),
    envrunOverBareThroughputAtCeiling: round2(envrunCeiling!.runsPerSec / bareCeiling!.runsPerSec),
    envrunOverBareP50OneAtATime: round2(envrun1!.p50 / bare1!.p50),
  };

  // Scale: N runs held at ready at once (leases held), the envrun worker's RSS when all are ready; then
  // the same for N bare workflows held at their ready point, the baseline of what Temporal itself costs.
  const scale: Array<{
    held: number;
    workerRssMb: number;
    workerPeakRssMb: number;
    secondsToReady: number;
    bareWorkerRssMb: number;
  }> = [];
  const inBatches = async (ids: string[], fn: (id: string) => Promise<unknown>) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(50, ids.length) }, async () => {
        while (next < ids.length) await fn(ids[next++]!);
      }),
    );
  };
  for (const held of SCALE) {
    const ids = Array.from({ length: held }, (_, i) => `held-${held}-${i}`);
    envrunRss.reset();
    const t = performance.now();
    await inBatches(ids, (id) => client.startRunAndWaitReady(request(id)));
    const secondsToReady = Math.round((performance.now() - t) / 100) / 10;
    await new Promise((r) => setTimeout(r, 1000)); // let the last tasks settle
    const workerRssMb = mb(envrunRss.now());
    const workerPeakRssMb = mb(envrunRss.peak);
    await inBatches(ids, (id) => client.completeRun('bench', id, { status: 'succeeded' }));

    const handles = new Map<string, WorkflowHandle>();
    await inBatches(ids, async (id) => {
      const op = new WithStartWorkflowOperation('benchBare', {
        workflowId: `bare-${id}`,
        taskQueue: 'bench-bare',
        workflowIdConflictPolicy: 'FAIL',
        args: [],
      });
      await temporal.workflow.executeUpdateWithStart(bareReady, { startWorkflowOperation: op });
      handles.set(id, await op.workflowHandle());
    });
    await new Promise((r) => setTimeout(r, 1000));
    const bareWorkerRssMb = mb(bareRss.now());
    await inBatches(ids, (id) => handles.get(id)!.executeUpdate(bareComplete));
    scale.push({ held, workerRssMb, workerPeakRssMb, secondsToReady, bareWorkerRssMb });
  }
  const largest = scale[scale.length - 1]!;

  const targets = [
    {
      target: 'envrun/bare start→ready p50 ≤ 1.0',
      measured: ratios.envrunOverBareP50,
      met: ratios.envrunOverBareP50 <= 1,
    },
    {
      target: 'envrun/bare throughput ≥ 0.8',
      measured: ratios.envrunOverBareThroughput,
      met: ratios.envrunOverBareThroughput >= 0.8,
    },
    {
      target: `envrun ≥ 100 runs/s (c=${CEILING_CONCURRENCY})`,
      measured: `${envrunCeiling!.runsPerSec} (bare's own ceiling ${bareCeiling!.runsPerSec})`,
      met: envrunCeiling!.runsPerSec >= 100,
    },
    {
      target: `envrun/bare throughput at c=${CEILING_CONCURRENCY} ≥ 0.8`,
      measured: ratios.envrunOverBareThroughputAtCeiling,
      met: ratios.envrunOverBareThroughputAtCeiling >= 0.8,
    },
    {
      target: `${largest.held} held, worker RSS ≤ 300 MB`,
      measured: `${largest.workerRssMb} (bare ${largest.bareWorkerRssMb})`,
      met: largest.workerRssMb <= 300,
    },
    { target: 'bwrap realize→first command p50 ≤ 50 ms (c=1)', measured: sandbox1!.p50, met: sandbox1!.p50 <= 50 },
    {
      target: `bwrap realize→first command p50 ≤ 50 ms (c=${CONCURRENCY})`,
      measured: sandbox!.p50,
      met: sandbox!.p50 <= 50,
    },
  ];

  console.log(
    `\nenvrun bench: ${N} runs per mode (bare and envrun in ${ROUNDS} interleaved rounds); workers in their own processes; cache ${CACHE} workflows\n`,
  );
  console.table(table);
  console.log('ratios', ratios);
  console.log(
    '\nscale (runs held at ready at once; RSS of the envrun worker process, and of the bare worker holding as many):',
  );
  console.table(scale);
  console.log('\ntargets:');
  console.table(targets);
  console.log('\nmarkdown:\n');
  console.log(
    '| mode | concurrency | runs/s | p50 ms | p95 ms | p99 ms | peak RSS MB (of) | CPU ms/run (of) | server CPU ms/run |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of table) {
    console.log(
      `| ${r.mode} | ${r.concurrency} | ${r.runsPerSec} | ${r.p50} | ${r.p95} | ${r.p99} | ${r.peakRssMb} (${r.rssOf}) | ${r.cpuMsPerRun} | ${r.serverCpuMsPerRun} |`,
    );
  }
  mkdirSync('bench/results', { recursive: true });
  const file = join('bench/results', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        runs: N,
        rounds: ROUNDS,
        concurrency: CONCURRENCY,
        ceilingConcurrency: CEILING_CONCURRENCY,
        maxCachedWorkflows: CACHE,
        machine: `${process.platform} ${process.arch}, node ${process.version}`,
        modes: table,
        ratios,
        scale,
        targets,
      },
      null,
      2,
    ),
  );
  console.log(`\nwritten ${file}`);

  for (const probe of [envrunRss, bareRss, selfRss]) probe.stop();
  for (const child of children) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  await clientConnection.close();
  await database.close();
  await server.stop();
  await stopEmbeddedStore(join(tmp, 'store'));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
