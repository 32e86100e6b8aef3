// `npm run bench`: envrun against Temporal's own floor and two bare baselines, on one dev server, in
// interleaved repetitions. docs/benchmarks.md says what each mode is, why it is a fair baseline and how to
// read the output. Writes bench/results/latest.json (and a timestamped copy); `bench/bench-table.ts`
// renders it as markdown. `--engine cluster` runs floor, bare_shape and envrun on the production engine
// instead (bench/bench-cluster.ts), `--engine both` does both; the cluster's keys are merged into latest.json.
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createDrivers } from '../drivers/registry.js';
import { createActivities } from '../activities/index.js';
import { createDatabaseIfMissing, openDatabase } from '../store/db.js';
import { ensureEmbeddedStore, readStoreInfo, stopEmbeddedStore } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { bundleWorkflows } from '../worker/bundle.js';
import { createProviders } from '../drivers/providers/load.js';
import { startDevServer } from '../scripts/dev-server.js';
import { inProcessRun } from './bench-inprocess.js';
import { compareShapes, type DerivedShape, type PartCounts } from './bench-plan.js';
import { cpuSnapshot, mb, memoryOf, pct, r1, sleep, writeGcPreload } from './bench-proc.js';
import {
  CACHE,
  CONCURRENCY,
  REPS,
  ROOT,
  RUNS_C1,
  RUNS_C50,
  aggregate,
  bareArtifacts,
  bareMode,
  bareShapeOf,
  bareStarter,
  completeUpdate,
  cpuText,
  envrunMode,
  envrunShapeOf,
  fakeEnvironment,
  interleaved,
  log,
  now,
  num,
  orNull,
  ratio,
  runRequest,
  seriesRunner,
  spreadText,
  startBareWorker,
  startEnvrunWorker,
  statsAt,
  target,
  targetRows,
  warmUp,
  type Cpu,
  type Mode,
  type ModeStats,
  type Target,
} from './bench-modes.js';

const SANDBOX_RUNS = num('BENCH_SANDBOX_RUNS', 10);
const SCALE = (process.env.BENCH_SCALE ?? '1,100,1000').split(',').filter(Boolean).map(Number);
const SCALE_BARE = process.env.BENCH_SCALE_BARE !== '0';
const EVICT_HELD = num('BENCH_EVICT_HELD', 100);
const EVICT_CACHE = num('BENCH_EVICT_CACHE', 20);
const EVICT_SAMPLES = num('BENCH_EVICT_SAMPLES', 40);
const SETTLE_MS = num('BENCH_SETTLE_MS', 2000);

export type ModeName = 'floor' | 'bare_shape' | 'bare_regular' | 'envrun' | 'in_process' | 'sandbox';

/** Is dist/ built from the current sources? (newest .ts of the build's folders vs the build info) */
function distFresh(): { fresh: boolean; why: string } {
  const built = join(ROOT, 'dist/.tsbuildinfo');
  if (!existsSync(join(ROOT, 'dist/worker/main.js')) || !existsSync(built)) return { fresh: false, why: 'no dist/' };
  const builtAt = statSync(built).mtimeMs;
  const dirs = ['contracts', 'store', 'drivers', 'leases', 'lib', 'workflows', 'activities', 'worker', 'client'];
  const walk = (dir: string): string | null => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const found = walk(p);
        if (found) return found;
      } else if (p.endsWith('.ts') && statSync(p).mtimeMs > builtAt) return p;
    }
    return null;
  };
  for (const d of dirs) {
    if (!existsSync(join(ROOT, d))) continue;
    const newer = walk(join(ROOT, d));
    if (newer) return { fresh: false, why: `${newer.slice(ROOT.length)} is newer than dist/` };
  }
  return { fresh: true, why: 'dist/ is up to date' };
}

/** Builds dist/ when a source is newer (unless BENCH_BUILD=0); where envrun's worker runs from. */
function workerRuntime(): 'dist' | 'tsx' {
  let fresh = distFresh();
  if (!fresh.fresh && process.env.BENCH_BUILD !== '0') {
    log(`[bench] ${fresh.why}: npm run build`);
    const built = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    fresh = built.status === 0 ? distFresh() : { fresh: false, why: `npm run build failed (${built.status})` };
  }
  if (fresh.fresh) return 'dist';
  log(`[bench] WARNING: ${fresh.why}; the envrun worker runs from the sources through tsx (more memory and CPU)`);
  return 'tsx';
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-bench-'));
  chmodSync(tmp, 0o755); // the embedded server runs as an unprivileged user when we are root
  const preload = pathToFileURL(writeGcPreload(tmp)).href;
  const stoppers: Array<() => Promise<unknown>> = [];
  const token = Date.now().toString(36);
  const cwd = mkdtempSync(join(tmpdir(), 'bench-ws-'));
  let succeeded = false;
  let stamped = '';

  // envrun's worker runs compiled (dist/) under plain node, like `npm run worker`; built first if stale.
  const runtime = workerRuntime();

  try {
    const server = await startDevServer({ headless: true, logFile: join(tmp, 'temporal.log') });
    stoppers.push(() => server.stop());
    const storeDir = join(tmp, 'store');
    const adminUrl = await ensureEmbeddedStore(storeDir);
    stoppers.push(() => stopEmbeddedStore(storeDir));
    await createDatabaseIfMissing(adminUrl, 'bench');
    const url = new URL(adminUrl);
    url.pathname = '/bench';
    const database = await openDatabase(url.toString(), 20);
    stoppers.push(() => database.close());
    const store = new Store(database.db);
    const dataDir = join(tmp, 'data');
    const postgresPid = readStoreInfo(storeDir)!.pid;

    // Bundles are built here, before any worker starts: no worker runs webpack.
    const envrunBundle = await bundleWorkflows(join(tmp, 'workflow-bundle.js'));
    const place = { tmp, preload, temporalAddress: server.address };
    const bare = { ...place, ...(await bareArtifacts(tmp)) };
    const envrunWorkerAt = (name: string, queue: string, hostId: string, cache: number) =>
      startEnvrunWorker({
        ...place,
        name,
        runtime,
        nodeArgs: [
          ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
          ...(process.env.BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean),
        ],
        databaseUrl: url.toString(),
        queue,
        hostId,
        dataDir,
        bundle: envrunBundle,
        cache,
      });
    const bareWorkerAt = (name: string, queue: string, cache: number) => startBareWorker(bare, name, queue, cache);
    const [envrunWorker, floorWorker, shapeWorker, regularWorker] = await Promise.all([
      envrunWorkerAt('envrun-worker', 'bench', 'bench-host', CACHE),
      bareWorkerAt('floor-worker', 'bench-floor', CACHE),
      bareWorkerAt('shape-worker', 'bench-shape', CACHE),
      bareWorkerAt('regular-worker', 'bench-regular', CACHE),
    ]);
    for (const w of [envrunWorker, floorWorker, shapeWorker, regularWorker]) stoppers.push(() => w.stop());
    log(`[bench] workers up (envrun from ${runtime}); logs in ${tmp}`);

    // Idle memory: freshly started, nothing run yet.
    await sleep(SETTLE_MS);
    const idle: Record<string, { rssAnonMb: number; rssAnonBeforeGcMb: number; vmRssMb: number }> = {};
    for (const [name, w] of [
      ['envrun', envrunWorker],
      ['floor', floorWorker],
      ['bare_shape', shapeWorker],
      ['bare_regular', regularWorker],
    ] as const) {
      const beforeGc = memoryOf(w.pid).rssAnon;
      const rssAnon = await w.gcThenRssAnon();
      idle[name] = { rssAnonMb: mb(rssAnon), rssAnonBeforeGcMb: mb(beforeGc), vmRssMb: mb(memoryOf(w.pid).vmRss) };
    }
    log(`[bench] idle worker RssAnon after gc: ${JSON.stringify(idle)}`);

    const providers = createProviders({ dataDir });
    const drivers = createDrivers(providers);
    const connection = await Connection.connect({ address: server.address });
    stoppers.push(() => connection.close());
    const temporal = new Client({ connection });
    const runDefaults = { awaitRetryMs: 0 };
    const client = new EnvRunClient({ client: temporal, taskQueue: 'bench', runDefaults });
    const admin = new EnvRunAdmin({ runs: client, store, drivers });
    const fakeEnv = await fakeEnvironment(admin, cwd);
    const bwEnv = await admin.createEnvironment({
      companyId: 'bench',
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const request = (id: string, environmentId = fakeEnv.id) => runRequest(id, environmentId, cwd);

    // ---- The shape of an envrun run, from a real run's history ----
    const { envrunShape, shapeInput } = await envrunShapeOf(client, request, token);

    const startBare = bareStarter(temporal);
    const floor = bareMode(startBare, 'floor', floorWorker, 'benchFloor', 'bench-floor', []);
    const bareShape = bareMode(startBare, 'bare_shape', shapeWorker, 'benchShape', 'bench-shape', [shapeInput]);
    const bareRegular = bareMode(startBare, 'bare_regular', regularWorker, 'benchBare', 'bench-regular', []);
    const envrun = envrunMode(client, request, envrunWorker);
    const sandbox: Mode<ModeName> = {
      name: 'sandbox',
      worker: envrunWorker,
      async one(id) {
        const t = now();
        await client.startRunAndWaitReady(request(id, bwEnv.id));
        const ready = now() - t;
        const res = await client.exec('bench', id, { command: 'echo', args: ['first output'], timeoutMs: 30_000 });
        const ms = now() - t;
        if (res.exitCode !== 0 || !res.stdout.includes('first output')) {
          throw new Error(`sandbox exec: exit ${res.exitCode}, ${res.stderr.slice(0, 300)}`);
        }
        const c = now();
        await client.completeRun('bench', id, { status: 'succeeded' });
        return { ms, complete: now() - c, extra: { start_to_ready: ready, exec: ms - ready } };
      },
    };
    const acts = createActivities({ store, drivers, temporal });
    const inProcess: Mode<ModeName> = {
      name: 'in_process',
      worker: null,
      async one(id) {
        const { readyMs, completeMs } = await inProcessRun(acts, request(id));
        return { ms: readyMs, complete: completeMs };
      },
    };

    const cpuOf = (mode: Mode<ModeName>): Cpu => {
      const snap = cpuSnapshot({
        worker: { pid: mode.worker?.pid ?? -1, tree: true },
        server: { pid: server.process.pid!, tree: true },
        postgres: { pid: postgresPid, tree: true },
        client: { pid: process.pid, tree: false },
      });
      return { worker: snap.worker!, server: snap.server!, postgres: snap.postgres!, client: snap.client! };
    };
    const runSeries = seriesRunner({ token, cpuOf, peakRss: true });

    // ---- Warm-up (JIT, connections, caches), then bare_shape's own shape, checked against envrun's ----
    const core: Array<Mode<ModeName>> = [floor, bareShape, bareRegular, envrun];
    log(`[bench] warm-up`);
    await warmUp(core, runSeries);
    const probe = await runSeries(sandbox, 1, 1, -3);
    const sandboxAvailable = probe.errors === 0;
    if (!sandboxAvailable) log(`[bench] WARNING: sandbox mode skipped: ${probe.firstError}`);
    const inProcessProbe = await runSeries(inProcess, 1, 5, -4);
    const inProcessAvailable = inProcessProbe.errors === 0;
    if (!inProcessAvailable) log(`[bench] WARNING: in_process mode skipped: ${inProcessProbe.firstError}`);

    const shapeId = `bare_shape/${token}-shape-check`;
    const bareShapeShape = await bareShapeOf(startBare, 'benchShape', 'bench-shape', shapeId, [shapeInput]);
    const floorShape = await bareShapeOf(startBare, 'benchFloor', 'bench-floor', `floor/${token}-check`, []);
    const regularShape = await bareShapeOf(startBare, 'benchBare', 'bench-regular', `bare_regular/${token}-check`, []);
    const mismatches = compareShapes(envrunShape, bareShapeShape, ['envrun', 'bare_shape']);
    printShapes({ envrun: envrunShape, bare_shape: bareShapeShape, floor: floorShape, bare_regular: regularShape });
    for (const m of mismatches) log(`WARNING: shape mismatch: ${m}`);
    for (const n of [...envrunShape.notes, ...bareShapeShape.notes]) log(`WARNING: ${n}`);
    if (!mismatches.length) log('shape check: bare_shape matches envrun task for task');

    // ---- Interleaved repetitions ----
    const c1Modes: Array<Mode<ModeName>> = [
      ...core,
      ...(inProcessAvailable ? [inProcess] : []),
      ...(sandboxAvailable ? [sandbox] : []),
    ];
    const all = await interleaved({
      c1: c1Modes,
      c1Runs: (m) => (m === sandbox ? SANDBOX_RUNS : RUNS_C1),
      cN: core,
      runSeries,
      prefix: '[bench]',
    });
    const modes = aggregate(all);

    // ---- Memory: runs held at ready ----
    const inBatches = async <T>(ids: string[], concurrency: number, fn: (id: string) => Promise<T>) => {
      let next = 0;
      const out = new Map<string, T>();
      await Promise.all(
        Array.from({ length: Math.min(concurrency, ids.length) }, async () => {
          while (next < ids.length) {
            const id = ids[next++]!;
            out.set(id, await fn(id));
          }
        }),
      );
      return out;
    };
    const afterLoad = {
      envrun: mb(await envrunWorker.gcThenRssAnon()),
      bare_shape: mb(await shapeWorker.gcThenRssAnon()),
    };
    const held: Array<{
      held: number;
      envrunRssAnonMb: number;
      envrunRssAnonBeforeGcMb: number;
      envrunVmRssMb: number;
      envrunSecondsToReady: number;
      bareShapeRssAnonMb: number | null;
      bareShapeVmRssMb: number | null;
    }> = [];
    for (const n of SCALE) {
      const ids = Array.from({ length: n }, (_, i) => `${token}-held-${n}-${i}`);
      const t = now();
      await inBatches(ids, CONCURRENCY, (id) => client.startRunAndWaitReady(request(id)));
      const secondsToReady = r1((now() - t) / 1000);
      await sleep(SETTLE_MS);
      const envrunBeforeGc = memoryOf(envrunWorker.pid).rssAnon;
      const envrunRssAnon = await envrunWorker.gcThenRssAnon();
      const envrunVm = memoryOf(envrunWorker.pid).vmRss;
      await inBatches(ids, CONCURRENCY, (id) => client.completeRun('bench', id, { status: 'succeeded' }));
      let bareRssAnon: number | null = null;
      let bareVm: number | null = null;
      if (SCALE_BARE) {
        const handles = await inBatches(ids, CONCURRENCY, (id) =>
          startBare('benchShape', 'bench-shape', `bare_shape/${id}`, [shapeInput]),
        );
        await sleep(SETTLE_MS);
        bareRssAnon = await shapeWorker.gcThenRssAnon();
        bareVm = memoryOf(shapeWorker.pid).vmRss;
        await inBatches(ids, CONCURRENCY, (id) => handles.get(id)!.executeUpdate(completeUpdate));
      }
      held.push({
        held: n,
        envrunRssAnonMb: mb(envrunRssAnon),
        envrunRssAnonBeforeGcMb: mb(envrunBeforeGc),
        envrunVmRssMb: mb(envrunVm),
        envrunSecondsToReady: secondsToReady,
        bareShapeRssAnonMb: bareRssAnon === null ? null : mb(bareRssAnon),
        bareShapeVmRssMb: bareVm === null ? null : mb(bareVm),
      });
      log(`[bench] held ${n}: ${JSON.stringify(held[held.length - 1])}`);
    }

    // ---- Completing held runs that were evicted from the worker's cache (replayed) ----
    const evicted = async (kind: 'envrun' | 'bare_shape') => {
      const queue = `bench-evict-${kind}`;
      const worker =
        kind === 'envrun'
          ? await envrunWorkerAt('evict-envrun-worker', queue, 'bench-evict-host', EVICT_CACHE)
          : await bareWorkerAt('evict-shape-worker', queue, EVICT_CACHE);
      try {
        const evictClient = new EnvRunClient({ client: temporal, taskQueue: queue, runDefaults });
        const ids = Array.from({ length: EVICT_HELD }, (_, i) => `${token}-evict-${i}`);
        const input = { ...shapeInput, hostQueue: `${queue}/host/bench-host` };
        const handles = await inBatches(ids, 20, async (id) => {
          if (kind === 'envrun') {
            await evictClient.startRunAndWaitReady(request(id));
            return evictClient.handle('bench', id);
          }
          return startBare('benchShape', queue, `evict/${id}`, [input]);
        });
        await sleep(SETTLE_MS);
        const complete = async (id: string): Promise<void> => {
          if (kind === 'envrun') await evictClient.completeRun('bench', id, { status: 'succeeded' });
          else await (handles.get(id) as WorkflowHandle).executeUpdate(completeUpdate);
        };
        const timed = async (list: string[]) => {
          const out: number[] = [];
          for (const id of list) {
            const t = now();
            await complete(id);
            out.push(now() - t);
          }
          return out;
        };
        // The newest runs are still cached: first those (completing an evicted run would push them out),
        // then the oldest, which the cache evicted long ago.
        const cachedIds = ids.slice(-Math.max(1, Math.min(10, Math.floor(EVICT_CACHE / 2))));
        const cached = await timed(cachedIds);
        const evictedIds = ids.slice(
          0,
          Math.min(EVICT_SAMPLES, Math.max(0, EVICT_HELD - EVICT_CACHE - cachedIds.length)),
        );
        const replayed = await timed(evictedIds);
        const rest = ids.filter((id) => !cachedIds.includes(id) && !evictedIds.includes(id));
        await inBatches(rest, CONCURRENCY, complete);
        return {
          held: EVICT_HELD,
          cache: EVICT_CACHE,
          evictedSamples: replayed.length,
          evictedCompleteP50Ms: r1(pct(replayed, 50)),
          evictedCompleteP99Ms: r1(pct(replayed, 99)),
          cachedSamples: cached.length,
          cachedCompleteP50Ms: r1(pct(cached, 50)),
        };
      } finally {
        await worker.stop();
      }
    };
    const evictedEnvrun = await evicted('envrun');
    const evictedShape = await evicted('bare_shape');
    log(
      `[bench] evicted completion: envrun ${JSON.stringify(evictedEnvrun)}; bare_shape ${JSON.stringify(evictedShape)}`,
    );

    // ---- Results ----
    const m = statsAt(modes);
    const heldAt = (n: number) => held.find((h) => h.held === n);
    const summary = {
      repetitions: REPS,
      floor_c1_p50_ms: orNull(m('floor', 1)?.p50.median),
      bare_shape_c1_p50_ms: orNull(m('bare_shape', 1)?.p50.median),
      envrun_c1_p50_ms: orNull(m('envrun', 1)?.p50.median),
      envrun_c1_p99_ms: orNull(m('envrun', 1)?.pooledP99),
      bare_shape_c50_runs_per_s: orNull(m('bare_shape', 'n')?.runsPerS.median),
      envrun_c50_runs_per_s: orNull(m('envrun', 'n')?.runsPerS.median),
      idle_worker_rss_mb: orNull(idle.envrun?.rssAnonMb),
      held_1000_rss_mb: orNull(heldAt(1000)?.envrunRssAnonMb),
      evicted_complete_p50_ms: orNull(evictedEnvrun.evictedCompleteP50Ms),
      sandbox_first_output_p50_ms: orNull(m('sandbox', 1)?.p50.median),
      history_events_per_run: envrunShape.events,
      history_bytes_per_run: envrunShape.bytes,
      // ---- more ----
      floor_c1_p99_ms: orNull(m('floor', 1)?.pooledP99),
      bare_shape_c1_p99_ms: orNull(m('bare_shape', 1)?.pooledP99),
      bare_regular_c1_p50_ms: orNull(m('bare_regular', 1)?.p50.median),
      bare_regular_c1_p99_ms: orNull(m('bare_regular', 1)?.pooledP99),
      in_process_c1_p50_ms: orNull(m('in_process', 1)?.p50.median),
      in_process_c1_p99_ms: orNull(m('in_process', 1)?.pooledP99),
      sandbox_first_output_p99_ms: orNull(m('sandbox', 1)?.pooledP99),
      sandbox_start_to_ready_p50_ms: orNull(m('sandbox', 1)?.extra['start_to_ready']?.p50),
      sandbox_exec_p50_ms: orNull(m('sandbox', 1)?.extra['exec']?.p50),
      floor_c50_runs_per_s: orNull(m('floor', 'n')?.runsPerS.median),
      bare_regular_c50_runs_per_s: orNull(m('bare_regular', 'n')?.runsPerS.median),
      envrun_c50_p50_ms: orNull(m('envrun', 'n')?.p50.median),
      bare_shape_c50_p50_ms: orNull(m('bare_shape', 'n')?.p50.median),
      envrun_c1_complete_p50_ms: orNull(m('envrun', 1)?.completeP50),
      bare_shape_c1_complete_p50_ms: orNull(m('bare_shape', 1)?.completeP50),
      envrun_vs_floor_c1_p50: ratio(orNull(m('envrun', 1)?.p50.median), orNull(m('floor', 1)?.p50.median)),
      envrun_vs_bare_shape_c1_p50: ratio(orNull(m('envrun', 1)?.p50.median), orNull(m('bare_shape', 1)?.p50.median)),
      envrun_vs_bare_shape_c50_throughput: ratio(
        orNull(m('envrun', 'n')?.runsPerS.median),
        orNull(m('bare_shape', 'n')?.runsPerS.median),
      ),
      bare_shape_vs_floor_c1_p50: ratio(orNull(m('bare_shape', 1)?.p50.median), orNull(m('floor', 1)?.p50.median)),
      envrun_c50_worker_cpu_ms_per_run: orNull(m('envrun', 'n')?.cpu.worker),
      envrun_c50_server_cpu_ms_per_run: orNull(m('envrun', 'n')?.cpu.server),
      envrun_c50_postgres_cpu_ms_per_run: orNull(m('envrun', 'n')?.cpu.postgres),
      envrun_c50_client_cpu_ms_per_run: orNull(m('envrun', 'n')?.cpu.client),
      bare_shape_c50_worker_cpu_ms_per_run: orNull(m('bare_shape', 'n')?.cpu.worker),
      bare_shape_c50_server_cpu_ms_per_run: orNull(m('bare_shape', 'n')?.cpu.server),
      bare_shape_c50_client_cpu_ms_per_run: orNull(m('bare_shape', 'n')?.cpu.client),
      floor_c50_worker_cpu_ms_per_run: orNull(m('floor', 'n')?.cpu.worker),
      floor_c50_server_cpu_ms_per_run: orNull(m('floor', 'n')?.cpu.server),
      idle_bare_shape_worker_rss_mb: orNull(idle.bare_shape?.rssAnonMb),
      idle_floor_worker_rss_mb: orNull(idle.floor?.rssAnonMb),
      after_load_worker_rss_mb: afterLoad.envrun,
      after_load_bare_shape_worker_rss_mb: afterLoad.bare_shape,
      held_1_rss_mb: orNull(heldAt(1)?.envrunRssAnonMb),
      held_100_rss_mb: orNull(heldAt(100)?.envrunRssAnonMb),
      held_1000_bare_shape_rss_mb: orNull(heldAt(1000)?.bareShapeRssAnonMb),
      held_1000_seconds_to_ready: orNull(heldAt(1000)?.envrunSecondsToReady),
      cached_complete_p50_ms: orNull(evictedEnvrun.cachedCompleteP50Ms),
      bare_shape_evicted_complete_p50_ms: orNull(evictedShape.evictedCompleteP50Ms),
      bare_shape_history_events_per_run: bareShapeShape.events,
      bare_shape_history_bytes_per_run: bareShapeShape.bytes,
      envrun_workflow_tasks_per_run: envrunShape.counts.total.workflowTasks,
      shape_mismatches: mismatches.length,
    };
    const targets = [
      target('c=1 start→ready p50 ≤ 3× floor (ratio)', summary.envrun_vs_floor_c1_p50, 3, '≤'),
      target('c=1 start→ready p50 ≤ 1.3× bare_shape (ratio)', summary.envrun_vs_bare_shape_c1_p50, 1.3, '≤'),
      target('c=1 start→ready p50 ≤ 60 ms', summary.envrun_c1_p50_ms, 60, '≤'),
      target('c=1 start→ready p99 ≤ 120 ms', summary.envrun_c1_p99_ms, 120, '≤'),
      target(
        `c=${CONCURRENCY} throughput ≥ 0.9× bare_shape (ratio)`,
        summary.envrun_vs_bare_shape_c50_throughput,
        0.9,
        '≥',
      ),
      target(`c=${CONCURRENCY} throughput ≥ 30 runs/s`, summary.envrun_c50_runs_per_s, 30, '≥'),
      target('history ≤ 35 events per completed run', summary.history_events_per_run, 35, '≤'),
      target('history ≤ 20 KB per completed run (bytes)', summary.history_bytes_per_run, 20 * 1024, '≤'),
      target('idle worker ≤ 150 MB (RssAnon after gc)', summary.idle_worker_rss_mb, 150, '≤'),
      target('1,000 held at ready ≤ 250 MB (RssAnon after gc)', summary.held_1000_rss_mb, 250, '≤'),
      target('evicted held run: complete p50 ≤ 150 ms', summary.evicted_complete_p50_ms, 150, '≤'),
      target('sandbox start→first output p50 ≤ 100 ms', summary.sandbox_first_output_p50_ms, 100, '≤'),
    ];

    const finishedAt = new Date();
    const result = {
      version: 2,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationS: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
      machine: {
        platform: `${process.platform} ${process.arch}`,
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? null,
        memoryMb: mb(totalmem()),
        loadAvgAtStart: readFileSync('/proc/loadavg', 'utf8').trim(),
      },
      settings: {
        reps: REPS,
        runsC1: RUNS_C1,
        runsC50: RUNS_C50,
        concurrency: CONCURRENCY,
        sandboxRuns: SANDBOX_RUNS,
        scale: SCALE,
        maxCachedWorkflows: CACHE,
        evict: { held: EVICT_HELD, cache: EVICT_CACHE, samples: EVICT_SAMPLES },
        envrunWorkerRuntime: runtime,
        workerLogLevel: process.env.BENCH_WORKER_LOG_LEVEL ?? 'INFO',
        sandboxFirstOutput: 'start→ready→exec returned (the exec API returns output when the command ends)',
      },
      summary,
      targets,
      shape: {
        envrun: shapeReport(envrunShape),
        bare_shape: shapeReport(bareShapeShape),
        floor: shapeReport(floorShape),
        bare_regular: shapeReport(regularShape),
        mismatches,
        plan: envrunShape.plan,
      },
      modes,
      memory: { idle, afterLoad, held },
      evicted: { envrun: evictedEnvrun, bare_shape: evictedShape },
      // Every sample, for a second look (ms, rounded to 0.1).
      series: all.map((s) => ({
        ...s,
        latencies: s.latencies.map(r1),
        completes: s.completes.map(r1),
        extra: Object.fromEntries(Object.entries(s.extra).map(([k, xs]) => [k, xs.map(r1)])),
      })),
    };
    printResults(result.modes, summary, targets, held);
    const dir = join(ROOT, 'bench/results');
    mkdirSync(dir, { recursive: true });
    stamped = join(dir, `bench-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(stamped, JSON.stringify(result, null, 2) + '\n');
    writeFileSync(join(dir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    log(`\nwritten ${resolve(stamped)} and bench/results/latest.json (${result.durationS} s)`);
    succeeded = true;
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch((err: unknown) => console.error(err));
    // The logs of a failed run stay for a look (and with BENCH_KEEP=1).
    if (succeeded && process.env.BENCH_KEEP !== '1') {
      for (const dir of [tmp, cwd]) rmSync(dir, { recursive: true, force: true });
    } else log(`[bench] logs and data kept in ${tmp}`);
  }
  // Last, on servers of its own: what a command costs (`npm run bench:exec`), its keys merged into latest.json.
  if (process.env.BENCH_EXEC !== '0') {
    log('\n[bench] exec part: bench/bench-exec.ts');
    const exec = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(ROOT, 'bench/bench-exec.ts')], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, BENCH_BUILD: '0' }, // built above when stale
    });
    if (exec.status !== 0) throw new Error(`bench/bench-exec.ts failed (${exec.status ?? exec.signal})`);
    writeFileSync(stamped, readFileSync(join(ROOT, 'bench/results/latest.json')));
  }
}

function shapeReport(s: DerivedShape) {
  return {
    events: s.events,
    bytes: s.bytes,
    inputBytes: s.inputBytes,
    counts: s.counts,
    tasks: s.tasks,
    notes: s.notes,
  };
}

function printShapes(shapes: Record<string, DerivedShape>): void {
  const row = (name: string, part: string, c: PartCounts, s?: DerivedShape) => ({
    workflow: name,
    part,
    'workflow tasks': c.workflowTasks,
    'regular (host queue)': `${c.regular} (${c.regularHost})`,
    local: c.local,
    upserts: `${c.upserts} (${c.upsertKeys} keys)`,
    memo: c.memos,
    patches: c.patches,
    timers: c.timers,
    events: s ? s.events : '',
    bytes: s ? s.bytes : '',
  });
  log(
    '\nshape of one completed run, from its history (ready: start → waitReady answered; complete: complete → close):',
  );
  console.table(
    Object.entries(shapes).flatMap(([name, s]) => [
      row(name, 'ready', s.counts.ready),
      row(name, 'complete', s.counts.complete),
      row(name, 'total', s.counts.total, s),
    ]),
  );
  for (const name of ['envrun', 'bare_shape']) {
    const s = shapes[name]!;
    log(`${name} workflow tasks:`);
    for (const part of ['ready', 'held', 'complete'] as const)
      s.tasks[part].forEach((t, i) => log(`  ${part} ${i + 1}: ${t.join(', ') || '(no commands)'}`));
  }
}

function printResults(
  modes: Record<string, ModeStats>,
  summary: Record<string, number | null>,
  targets: Target[],
  held: unknown[],
): void {
  log('\nper mode: median of the repetitions (min–max); pooled = over every sample of every repetition');
  console.table(
    Object.values(modes).map((s) => ({
      mode: s.mode,
      c: s.concurrency,
      reps: s.reps,
      samples: s.samples,
      errors: s.errors,
      'p50 ms': spreadText(s.p50),
      'p99 ms': spreadText(s.p99),
      'pooled p50/p99': `${s.pooledP50} / ${s.pooledP99}`,
      'runs/s': spreadText(s.runsPerS),
      'complete p50': s.completeP50,
      'CPU ms/run w/srv/pg/cli': cpuText(s.cpu),
    })),
  );
  log('runs held at ready (RssAnon after gc, MB):');
  console.table(held);
  log('summary:');
  console.table(Object.entries(summary).map(([key, value]) => ({ key, value })));
  log('targets:');
  console.table(targetRows(targets));
}

/** `--engine dev` (the default: the dev server), `cluster` (the production engine) or `both`. */
function engineArg(): 'dev' | 'cluster' | 'both' {
  const { values } = parseArgs({ options: { engine: { type: 'string', default: 'dev' } } });
  const engine = values.engine;
  if (engine !== 'dev' && engine !== 'cluster' && engine !== 'both')
    throw new Error(`--engine ${engine}: expected dev, cluster or both`);
  return engine;
}

async function run(): Promise<void> {
  const engine = engineArg();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  if (engine !== 'cluster') await main();
  if (engine !== 'dev') {
    log('\n[bench] production engine: bench/bench-cluster.ts');
    const { clusterBench } = await import('./bench-cluster.js');
    await clusterBench({ runtime: workerRuntime() });
  }
}

run().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
