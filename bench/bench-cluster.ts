// `npm run bench -- --engine cluster`: the bench's floor, bare_shape and envrun modes on the production engine,
// the Temporal server on PostgreSQL as four service processes (test/cluster/harness.ts). The server runs
// deploy/dynamicconfig.yaml, as docker-compose.yml mounts it, and every other setting at its default: the
// transfer queue read at most 20 times a second per shard (the dev-server bench reads it 1000 times), 4
// history shards, 4 task-queue partitions. Same workers, same shape and the same method as the dev-server
// bench (docs/benchmarks.md, "Production engine"); the figures are merged into bench/results/latest.json as
// `cluster_*` keys, with where they came from under `cluster`.
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import { defineUpdate } from '@temporalio/workflow';
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import ts from 'typescript';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runWorkflowId } from '../contracts/index.js';
import { createProviders } from '../drivers/providers/load.js';
import { createDrivers } from '../drivers/registry.js';
import { openDatabase } from '../store/db.js';
import { tsxLoaderUrl } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { DEFAULT_MAX_CACHED_WORKFLOWS } from '../worker/config.js';
import { ensureTemporalServer } from '../scripts/temporal-server.js';
import { startCluster, TEMPORAL_SERVICES, type Cluster } from '../test/cluster/harness.js';
import { withPg } from '../test/cluster/processes.js';
import { compareShapes, deriveShape } from './bench-plan.js';
import {
  cpuSnapshot,
  median,
  pct,
  r1,
  r2,
  sleep,
  startWorkerProcess,
  writeGcPreload,
  type BenchProcess,
} from './bench-proc.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const num = (name: string, fallback: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v}: not a number`);
  return n;
};
const REPS = Math.max(1, num('BENCH_REPS', 5));
const RUNS_C50 = num('BENCH_RUNS', 200);
const RUNS_C1 = num('BENCH_C1_RUNS', Math.min(40, RUNS_C50));
const CONCURRENCY = num('BENCH_CONCURRENCY', 50);
const WARMUP = num('BENCH_WARMUP', 50);
const CACHE = num('ENVRUN_MAX_CACHED_WORKFLOWS', DEFAULT_MAX_CACHED_WORKFLOWS);
/** Runs per mode of the PostgreSQL transaction count (0: none). */
const PG_RUNS = num('BENCH_CLUSTER_PG_RUNS', RUNS_C1);
/** A backend flushes its statistics within 10 s of going idle: wait longer than that before a reading. */
const PG_SETTLE_MS = 11_000;
const DATABASES = ['temporal', 'temporal_visibility', 'envrun'] as const;

const readyUpdate = defineUpdate<string>('waitReady');
const completeUpdate = defineUpdate<string>('complete');
const now = () => performance.now();
const log = (line: string) => console.log(line);

type ClusterMode = 'floor' | 'bare_shape' | 'envrun';
interface Mode {
  name: ClusterMode;
  worker: BenchProcess;
  one(id: string): Promise<{ ms: number; complete: number }>;
}
type Cpu = { worker: number; server: number; postgres: number; client: number };
interface Series {
  mode: ClusterMode;
  concurrency: number;
  rep: number;
  runs: number;
  errors: number;
  firstError: string | null;
  latencies: number[];
  completes: number[];
  wallMs: number;
  runsPerS: number;
  p50: number;
  p99: number;
  cpu: Cpu;
}
interface Spread {
  median: number;
  min: number;
  max: number;
}
export interface ClusterModeStats {
  mode: ClusterMode;
  concurrency: number;
  reps: number;
  samples: number;
  errors: number;
  p50: Spread;
  p99: Spread;
  runsPerS: Spread;
  pooledP99: number;
  completeP50: number;
  /** CPU ms per run: worker, Temporal (four services), PostgreSQL (Temporal's persistence and envrun's store), client. */
  cpu: Cpu;
}

/** Runs the cluster bench and merges its figures into bench/results/latest.json. */
export async function clusterBench(options: { runtime: 'dist' | 'tsx' }): Promise<void> {
  const startedAt = new Date();
  const loadAvgAtStart = readFileSync('/proc/loadavg', 'utf8').trim();
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-bench-cluster-'));
  chmodSync(tmp, 0o755); // PostgreSQL runs as the postgres user below it
  const preload = pathToFileURL(writeGcPreload(tmp)).href;
  const stoppers: Array<() => Promise<unknown>> = [];
  const token = Date.now().toString(36);
  let succeeded = false;
  try {
    // The cluster (it bundles envrun's workflows for the hosts; this bench starts its own host) and the
    // baselines' bundle at once; a cluster that started is stopped whatever else failed.
    const settled = await Promise.allSettled([
      startCluster({ dir: join(tmp, 'cluster'), taskQueue: 'bench', hosts: 0, log }),
      bareArtifacts(tmp),
    ]);
    if (settled[0].status === 'fulfilled') {
      const started: Cluster = settled[0].value;
      stoppers.push(() => started.stop());
    }
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const cluster = (settled[0] as PromiseFulfilledResult<Cluster>).value;
    const { bareBundle, bareWorkerJs } = (
      settled[1] as PromiseFulfilledResult<Awaited<ReturnType<typeof bareArtifacts>>>
    ).value;
    const state = cluster.state();
    const engine = await engineInfo(state.pgAdminUrl);
    log(`[bench:cluster] ${engine.server} on ${engine.persistence}`);

    const dataDir = join(tmp, 'data');
    const startBareWorker = (name: string, queue: string) =>
      startWorkerProcess({
        name,
        script: bareWorkerJs,
        env: {
          TEMPORAL_ADDRESS: state.temporalAddress,
          ENVRUN_TASK_QUEUE: queue,
          BENCH_HOST_QUEUE: `${queue}/host/bench-host`,
          BENCH_WORKFLOW_BUNDLE: bareBundle,
          ENVRUN_MAX_CACHED_WORKFLOWS: String(CACHE),
        },
        logFile: join(tmp, `${name}.log`),
        preload,
      });
    const [envrunWorker, floorWorker, shapeWorker] = await Promise.all([
      startWorkerProcess({
        name: 'envrun-worker',
        script: join(ROOT, options.runtime === 'dist' ? 'dist/worker/main.js' : 'worker/main.ts'),
        nodeArgs: options.runtime === 'tsx' ? ['--import', tsxLoaderUrl()] : [],
        env: {
          TEMPORAL_ADDRESS: state.temporalAddress,
          TEMPORAL_NAMESPACE: state.namespace,
          DATABASE_URL: state.databaseUrl,
          ENVRUN_TASK_QUEUE: 'bench',
          ENVRUN_HOST_ID: 'bench-host',
          ENVRUN_DATA_DIR: dataDir,
          ENVRUN_WORKFLOW_BUNDLE: state.workflowBundle,
          ENVRUN_REAPER_EVERY: 'off',
          ENVRUN_LOG_LEVEL: process.env.BENCH_WORKER_LOG_LEVEL ?? 'INFO',
          ENVRUN_MAX_CACHED_WORKFLOWS: String(CACHE),
        },
        logFile: join(tmp, 'envrun-worker.log'),
        preload,
      }),
      startBareWorker('floor-worker', 'bench-floor'),
      startBareWorker('shape-worker', 'bench-shape'),
    ]);
    for (const w of [envrunWorker, floorWorker, shapeWorker]) stoppers.push(() => w.stop());
    log(`[bench:cluster] workers up (envrun from ${options.runtime}); logs in ${tmp}`);

    const database = await openDatabase(state.databaseUrl, 5);
    stoppers.push(() => database.close());
    const connection = await Connection.connect({ address: state.temporalAddress });
    stoppers.push(() => connection.close());
    const temporal = new Client({ connection, namespace: state.namespace });
    const client = new EnvRunClient({ client: temporal, taskQueue: 'bench', runDefaults: { awaitRetryMs: 0 } });
    const admin = new EnvRunAdmin({
      runs: client,
      store: new Store(database.db),
      drivers: createDrivers(createProviders({ dataDir })),
    });
    const env = await admin.createEnvironment({
      companyId: 'bench',
      name: 'fake',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const cwd = mkdtempSync(join(tmp, 'ws-'));
    chmodSync(cwd, 0o755);
    writeFileSync(join(cwd, 'README'), 'a tiny workspace\n');
    const request = (id: string) => ({
      companyId: 'bench',
      heartbeatRunId: id,
      environmentId: env.id,
      workspace: { baseCwd: cwd, cwd },
    });

    // envrun's shape, from a real run's history on this engine; bare_shape replays it.
    const envrunOnce = async (id: string) => {
      await client.startRunAndWaitReady(request(id));
      await client.completeRun('bench', id, { status: 'succeeded' });
      return client.temporal.workflow.getHandle(runWorkflowId('bench', id)).fetchHistory();
    };
    for (let i = 0; i < 2; i++) await envrunOnce(`${token}-shape-warm-${i}`);
    const envrunShape = deriveShape(await envrunOnce(`${token}-shape`));
    const shapeInput = (() => {
      const bare = { plan: envrunShape.plan, hostQueue: 'bench-shape/host/bench-host', pad: '' };
      const missing = envrunShape.inputBytes - Buffer.byteLength(JSON.stringify(bare));
      return { ...bare, pad: 'x'.repeat(Math.max(0, missing)) };
    })();
    const startBare = async (workflowType: string, queue: string, id: string, args: unknown[]) => {
      const op = new WithStartWorkflowOperation(workflowType, {
        workflowId: id,
        taskQueue: queue,
        workflowIdConflictPolicy: 'FAIL',
        args,
      });
      await temporal.workflow.executeUpdateWithStart(readyUpdate, { startWorkflowOperation: op });
      return op.workflowHandle();
    };
    const bareMode = (name: ClusterMode, worker: BenchProcess, type: string, queue: string, args: unknown[]) => ({
      name,
      worker,
      async one(id: string) {
        const t = now();
        const handle = await startBare(type, queue, `${name}/${id}`, args);
        const ms = now() - t;
        const c = now();
        await handle.executeUpdate(completeUpdate);
        return { ms, complete: now() - c };
      },
    });
    const floor = bareMode('floor', floorWorker, 'benchFloor', 'bench-floor', []);
    const bareShape = bareMode('bare_shape', shapeWorker, 'benchShape', 'bench-shape', [shapeInput]);
    const envrun: Mode = {
      name: 'envrun',
      worker: envrunWorker,
      async one(id) {
        const t = now();
        await client.startRunAndWaitReady(request(id));
        const ms = now() - t;
        const c = now();
        await client.completeRun('bench', id, { status: 'succeeded' });
        return { ms, complete: now() - c };
      },
    };
    const modes: Mode[] = [floor, bareShape, envrun];

    // CPU of the worker's tree, the four Temporal services' trees, PostgreSQL's (postmaster and backends).
    const postmaster = Number(readFileSync(join(state.dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const cpuOf = (mode: Mode): Cpu => {
      const services = Object.fromEntries(
        TEMPORAL_SERVICES.map((s) => [s, { pid: cluster.state().services[s].pid ?? -1, tree: true }]),
      );
      const snap = cpuSnapshot({
        ...services,
        worker: { pid: mode.worker.pid, tree: true },
        postgres: { pid: postmaster, tree: true },
        client: { pid: process.pid, tree: false },
      });
      return {
        worker: snap.worker!,
        server: TEMPORAL_SERVICES.reduce((n, s) => n + snap[s]!, 0),
        postgres: snap.postgres!,
        client: snap.client!,
      };
    };
    const runSeries = async (mode: Mode, concurrency: number, runs: number, rep: number): Promise<Series> => {
      const latencies: number[] = [];
      const completes: number[] = [];
      let errors = 0;
      let firstError: string | null = null;
      let next = 0;
      const cpu0 = cpuOf(mode);
      const t = now();
      await Promise.all(
        Array.from({ length: Math.min(concurrency, runs) }, async () => {
          while (next < runs) {
            const i = next++;
            try {
              const s = await mode.one(`${mode.name}-${token}-c${concurrency}-r${rep}-${i}`);
              latencies.push(s.ms);
              completes.push(s.complete);
            } catch (err) {
              errors++;
              firstError ??= (err as Error).message;
            }
          }
        }),
      );
      const wallMs = now() - t;
      const cpu1 = cpuOf(mode);
      const per = (k: keyof Cpu) => r1((cpu1[k] - cpu0[k]) / runs);
      return {
        mode: mode.name,
        concurrency,
        rep,
        runs,
        errors,
        firstError,
        latencies,
        completes,
        wallMs,
        runsPerS: r1((latencies.length / wallMs) * 1000),
        p50: r1(pct(latencies, 50)),
        p99: r1(pct(latencies, 99)),
        cpu: { worker: per('worker'), server: per('server'), postgres: per('postgres'), client: per('client') },
      };
    };

    log('[bench:cluster] warm-up');
    for (const m of modes) {
      await runSeries(m, 1, Math.min(5, WARMUP), -1);
      const w = await runSeries(m, CONCURRENCY, WARMUP, -2);
      if (w.errors) throw new Error(`warm-up of ${m.name}: ${w.errors} failed runs: ${w.firstError}`);
    }
    const shapeHandle = await startBare('benchShape', 'bench-shape', `bare_shape/${token}-shape-check`, [shapeInput]);
    await shapeHandle.executeUpdate(completeUpdate);
    const bareShapeShape = deriveShape(await shapeHandle.fetchHistory());
    const mismatches = compareShapes(envrunShape, bareShapeShape, ['envrun', 'bare_shape']);
    for (const m of mismatches) log(`WARNING: shape mismatch: ${m}`);
    if (!mismatches.length) log('shape check: bare_shape matches envrun task for task');

    // Interleaved repetitions, the order rotating, as on the dev server.
    const all: Series[] = [];
    const repStarted = now();
    for (let rep = 0; rep < REPS; rep++) {
      const rot = <T>(xs: T[]) => xs.map((_, i) => xs[(i + rep) % xs.length]!);
      for (const m of rot(modes)) {
        if (RUNS_C1 > 0) all.push(await runSeries(m, 1, RUNS_C1, rep));
        await sleep(300);
      }
      for (const m of rot(modes)) {
        if (RUNS_C50 > 0) all.push(await runSeries(m, CONCURRENCY, RUNS_C50, rep));
        await sleep(500);
      }
      const done = all.filter((s) => s.rep === rep);
      log(
        `[bench:cluster] rep ${rep + 1}/${REPS} (${Math.round((now() - repStarted) / 1000)} s): ` +
          done.map((s) => `${s.mode}@c${s.concurrency} p50 ${s.p50} ms ${s.runsPerS}/s`).join('; '),
      );
      for (const s of done)
        if (s.errors) log(`  WARNING: ${s.mode}@c${s.concurrency}: ${s.errors} failed: ${s.firstError}`);
    }
    const stats = aggregate(all);

    // PostgreSQL transactions and rows written per run, per database, c=1, less the idle rate.
    const quiet = PG_RUNS > 0 ? await pgPerRun(state.pgAdminUrl, modes, runSeries, cpuOf) : null;
    const transactions = quiet?.perRun ?? null;
    if (quiet) log(`[bench:cluster] PostgreSQL per run: ${JSON.stringify(quiet.perRun)}`);
    if (quiet) log(`[bench:cluster] idle CPU ms/s: ${JSON.stringify(quiet.idleCpuMsPerS)}`);

    const m = (mode: ClusterMode, c: 1 | 'n') => stats[`${mode}@${c === 1 ? 1 : CONCURRENCY}`];
    const orNull = (x: number | null | undefined) => (x === undefined || x === null || !Number.isFinite(x) ? null : x);
    const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : r2(a / b));
    const p50 = (mode: ClusterMode) => orNull(m(mode, 1)?.p50.median);
    const rps = (mode: ClusterMode) => orNull(m(mode, 'n')?.runsPerS.median);
    const cpu = (mode: ClusterMode, k: keyof Cpu) => orNull(m(mode, 'n')?.cpu[k]);
    const xacts = (mode: ClusterMode) =>
      transactions ? r1(DATABASES.reduce((n, d) => n + (transactions[mode]?.[d]?.transactions ?? 0), 0)) : null;
    const summary = {
      cluster_repetitions: REPS,
      cluster_floor_c1_p50_ms: p50('floor'),
      cluster_bare_shape_c1_p50_ms: p50('bare_shape'),
      cluster_envrun_c1_p50_ms: p50('envrun'),
      cluster_envrun_c1_p99_ms: orNull(m('envrun', 1)?.pooledP99),
      cluster_floor_c50_runs_per_s: rps('floor'),
      cluster_bare_shape_c50_runs_per_s: rps('bare_shape'),
      cluster_envrun_c50_runs_per_s: rps('envrun'),
      cluster_envrun_vs_floor_c1_p50: ratio(p50('envrun'), p50('floor')),
      cluster_envrun_vs_bare_shape_c1_p50: ratio(p50('envrun'), p50('bare_shape')),
      cluster_envrun_vs_bare_shape_c50_throughput: ratio(rps('envrun'), rps('bare_shape')),
      cluster_envrun_c50_worker_cpu_ms_per_run: cpu('envrun', 'worker'),
      cluster_envrun_c50_server_cpu_ms_per_run: cpu('envrun', 'server'),
      cluster_envrun_c50_postgres_cpu_ms_per_run: cpu('envrun', 'postgres'),
      cluster_bare_shape_c50_worker_cpu_ms_per_run: cpu('bare_shape', 'worker'),
      cluster_bare_shape_c50_server_cpu_ms_per_run: cpu('bare_shape', 'server'),
      cluster_bare_shape_c50_postgres_cpu_ms_per_run: cpu('bare_shape', 'postgres'),
      cluster_floor_pg_transactions_per_run: xacts('floor'),
      cluster_bare_shape_pg_transactions_per_run: xacts('bare_shape'),
      cluster_envrun_pg_transactions_per_run: xacts('envrun'),
    };
    const target = (name: string, measured: number | null, limit: number, kind: '≤' | '≥') => ({
      target: name,
      measured,
      limit,
      pass: measured === null ? null : kind === '≤' ? measured <= limit : measured >= limit,
    });
    const targets = [
      target(
        'cluster c=1 start→ready p50 ≤ 1.3× bare_shape (ratio)',
        summary.cluster_envrun_vs_bare_shape_c1_p50,
        1.3,
        '≤',
      ),
      target(
        `cluster c=${CONCURRENCY} throughput ≥ 0.9× bare_shape (ratio)`,
        summary.cluster_envrun_vs_bare_shape_c50_throughput,
        0.9,
        '≥',
      ),
    ];
    const finishedAt = new Date();
    const details = {
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationS: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
      engine,
      machine: {
        cpus: cpus().length,
        loadAvgAtStart,
        loadAvgAtEnd: readFileSync('/proc/loadavg', 'utf8').trim(),
      },
      settings: {
        reps: REPS,
        runsC1: RUNS_C1,
        runsC50: RUNS_C50,
        concurrency: CONCURRENCY,
        warmup: WARMUP,
        maxCachedWorkflows: CACHE,
        envrunWorkerRuntime: options.runtime,
        pgRuns: PG_RUNS,
      },
      shape: {
        envrun: { events: envrunShape.events, bytes: envrunShape.bytes },
        bare_shape: { events: bareShapeShape.events, bytes: bareShapeShape.bytes },
        mismatches,
      },
      modes: stats,
      postgresPerRun: transactions,
      idleCpuMsPerS: quiet?.idleCpuMsPerS ?? null,
      series: all.map((s) => ({ ...s, latencies: s.latencies.map(r1), completes: s.completes.map(r1) })),
    };
    printResults(stats, summary, targets);
    mergeIntoLatest(summary, targets, details, startedAt);
    succeeded = true;
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch((err: unknown) => console.error(err));
    if (succeeded && process.env.BENCH_KEEP !== '1') rmSync(tmp, { recursive: true, force: true });
    else log(`[bench:cluster] logs and data kept in ${tmp}`);
  }
}

/** The baselines' workflow bundle and their worker transpiled to plain JS beside node_modules. */
async function bareArtifacts(tmp: string): Promise<{ bareBundle: string; bareWorkerJs: string }> {
  const bareBundle = join(tmp, 'bench-workflow-bundle.js');
  const { code } = await bundleWorkflowCode({
    workflowsPath: fileURLToPath(new URL('./bench-workflows.ts', import.meta.url)),
    logger: new DefaultLogger('WARN'),
  });
  writeFileSync(bareBundle, code);
  const cacheDir = join(ROOT, 'node_modules/.cache/envrun-bench');
  mkdirSync(cacheDir, { recursive: true });
  const bareWorkerJs = join(cacheDir, 'bench-bare-worker.mjs');
  writeFileSync(
    bareWorkerJs,
    ts.transpileModule(readFileSync(fileURLToPath(new URL('./bench-bare-worker.ts', import.meta.url)), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText,
  );
  return { bareBundle, bareWorkerJs };
}

/** What the figures were measured on: the server's version, its persistence and its settings. */
async function engineInfo(pgAdminUrl: string) {
  const binaries = await ensureTemporalServer(() => undefined);
  const out = spawnSync(binaries.server, ['--version'], { encoding: 'utf8', timeout: 20_000 }).stdout ?? '';
  const version = /version\s+(\S+)/.exec(out)?.[1] ?? 'unknown';
  const pgVersion = await withPg(pgAdminUrl, async (c) => {
    const r = await c.query<{ server_version: string }>('SHOW server_version');
    return r.rows[0]?.server_version.split(' ')[0] ?? 'unknown';
  });
  const dynamicConfig = readFileSync(join(ROOT, 'deploy/dynamicconfig.yaml'), 'utf8');
  return {
    name: 'cluster',
    server: `Temporal server ${version}`,
    serverVersion: version,
    services: [...TEMPORAL_SERVICES],
    historyShards: 4,
    persistence: `PostgreSQL ${pgVersion} (postgres12 plugin; SQL visibility on the same server; fsync off)`,
    postgresVersion: pgVersion,
    dynamicConfig: {
      file: 'deploy/dynamicconfig.yaml',
      keys: [...dynamicConfig.matchAll(/^([a-zA-Z][\w.]+):\s*$/gm)].map((x) => x[1]!),
      'history.transferProcessorMaxPollRPS': 'server default (20 per shard)',
    },
  };
}

type PerDatabase = Record<(typeof DATABASES)[number], { transactions: number; rowsWritten: number }>;

/**
 * Transactions (commits and rollbacks) and rows written (inserted, updated, deleted) per run in each
 * database, from pg_stat_database around `PG_RUNS` runs at c=1 per mode, less what the idle cluster does in
 * as long (Temporal's queues and shard leases, the workers' polls); and the CPU of that idle window.
 */
async function pgPerRun(
  pgAdminUrl: string,
  modes: Mode[],
  runSeries: (mode: Mode, c: number, runs: number, rep: number) => Promise<Series>,
  cpuOf: (mode: Mode) => Cpu,
): Promise<{ perRun: Record<ClusterMode, PerDatabase>; idleCpuMsPerS: Record<string, number> }> {
  const read = async () => {
    const rows = await withPg(pgAdminUrl, async (c) => {
      const r = await c.query<{ datname: string; xacts: string; writes: string }>(
        `SELECT datname, xact_commit + xact_rollback AS xacts, tup_inserted + tup_updated + tup_deleted AS writes
           FROM pg_stat_database WHERE datname = ANY($1)`,
        [[...DATABASES]],
      );
      return r.rows;
    });
    return {
      at: now(),
      rows: new Map(rows.map((r) => [r.datname, { xacts: Number(r.xacts), writes: Number(r.writes) }])),
    };
  };
  type Reading = Awaited<ReturnType<typeof read>>;
  const delta = (a: Reading, b: Reading, d: string) => ({
    xacts: (b.rows.get(d)?.xacts ?? 0) - (a.rows.get(d)?.xacts ?? 0),
    writes: (b.rows.get(d)?.writes ?? 0) - (a.rows.get(d)?.writes ?? 0),
  });
  const windows: Array<{ mode: ClusterMode; a: Reading; b: Reading }> = [];
  await sleep(PG_SETTLE_MS);
  for (const mode of modes) {
    const a = await read();
    const s = await runSeries(mode, 1, PG_RUNS, -5);
    if (s.errors) throw new Error(`PostgreSQL count of ${mode.name}: ${s.errors} failed runs: ${s.firstError}`);
    await sleep(PG_SETTLE_MS);
    windows.push({ mode: mode.name, a, b: await read() });
  }
  // The idle rate over a window as long as the longest of those.
  const longest = Math.max(...windows.map((w) => w.b.at - w.a.at));
  const cpuA = modes.map(cpuOf);
  const idleA = await read();
  await sleep(longest);
  const idleB = await read();
  const cpuB = modes.map(cpuOf);
  const idleMs = idleB.at - idleA.at;
  const perS = (a: number, b: number) => r1(((b - a) / idleMs) * 1000);
  const idleCpuMsPerS: Record<string, number> = {
    ...Object.fromEntries(modes.map((m, i) => [`${m.name}_worker`, perS(cpuA[i]!.worker, cpuB[i]!.worker)])),
    server: perS(cpuA[0]!.server, cpuB[0]!.server),
    postgres: perS(cpuA[0]!.postgres, cpuB[0]!.postgres),
  };
  const out = {} as Record<ClusterMode, PerDatabase>;
  for (const w of windows) {
    const ms = w.b.at - w.a.at;
    out[w.mode] = Object.fromEntries(
      DATABASES.map((d) => {
        const busy = delta(w.a, w.b, d);
        const idle = delta(idleA, idleB, d);
        return [
          d,
          {
            transactions: r1(Math.max(0, busy.xacts - (idle.xacts * ms) / idleMs) / PG_RUNS),
            rowsWritten: r1(Math.max(0, busy.writes - (idle.writes * ms) / idleMs) / PG_RUNS),
          },
        ];
      }),
    ) as PerDatabase;
  }
  return { perRun: out, idleCpuMsPerS };
}

function aggregate(all: Series[]): Record<string, ClusterModeStats> {
  const groups = new Map<string, Series[]>();
  for (const s of all) {
    const key = `${s.mode}@${s.concurrency}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  const spread = (xs: number[]): Spread => ({
    median: r1(median(xs)),
    min: r1(Math.min(...xs)),
    max: r1(Math.max(...xs)),
  });
  const out: Record<string, ClusterModeStats> = {};
  for (const [key, ss] of groups) {
    const cpuMed = (k: keyof Cpu) => r1(median(ss.map((s) => s.cpu[k])));
    out[key] = {
      mode: ss[0]!.mode,
      concurrency: ss[0]!.concurrency,
      reps: ss.length,
      samples: ss.reduce((n, s) => n + s.latencies.length, 0),
      errors: ss.reduce((n, s) => n + s.errors, 0),
      p50: spread(ss.map((s) => s.p50)),
      p99: spread(ss.map((s) => s.p99)),
      runsPerS: spread(ss.map((s) => s.runsPerS)),
      pooledP99: r1(
        pct(
          ss.flatMap((s) => s.latencies),
          99,
        ),
      ),
      completeP50: r1(
        pct(
          ss.flatMap((s) => s.completes),
          50,
        ),
      ),
      cpu: {
        worker: cpuMed('worker'),
        server: cpuMed('server'),
        postgres: cpuMed('postgres'),
        client: cpuMed('client'),
      },
    };
  }
  return out;
}

function printResults(
  stats: Record<string, ClusterModeStats>,
  summary: Record<string, number | null>,
  targets: Array<{ target: string; measured: number | null; limit: number; pass: boolean | null }>,
): void {
  const f = (s: Spread) => `${s.median} (${s.min}–${s.max})`;
  log('\nproduction engine, per mode: median of the repetitions (min–max); p99 over every sample');
  console.table(
    Object.values(stats).map((s) => ({
      mode: s.mode,
      c: s.concurrency,
      samples: s.samples,
      errors: s.errors,
      'p50 ms': f(s.p50),
      'pooled p99': s.pooledP99,
      'runs/s': f(s.runsPerS),
      'complete p50': s.completeP50,
      'CPU ms/run w/srv/pg/cli': `${s.cpu.worker} / ${s.cpu.server} / ${s.cpu.postgres} / ${s.cpu.client}`,
    })),
  );
  console.table(Object.entries(summary).map(([key, value]) => ({ key, value })));
  console.table(
    targets.map((t) => ({
      target: t.target,
      measured: t.measured,
      limit: t.limit,
      result: t.pass === null ? 'not measured' : t.pass ? 'pass' : 'FAIL',
    })),
  );
}

/**
 * Merges the cluster's keys into latest.json's summary (the dev server's stay), its targets (named
 * `cluster …`) in place of an earlier run's, and the details under `cluster`; a copy of the cluster part
 * goes to bench/results/bench-cluster-<time>.json.
 */
function mergeIntoLatest(
  summary: Record<string, number | null>,
  targets: Array<{ target: string }>,
  details: Record<string, unknown>,
  startedAt: Date,
): void {
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const latest = join(dir, 'latest.json');
  const result = (
    existsSync(latest) ? JSON.parse(readFileSync(latest, 'utf8')) : { version: 2, summary: {}, targets: [] }
  ) as { summary: Record<string, unknown>; targets?: Array<{ target: string }>; cluster?: unknown };
  result.summary = {
    ...Object.fromEntries(Object.entries(result.summary).filter(([k]) => !k.startsWith('cluster_'))),
    ...summary,
  };
  result.targets = [...(result.targets ?? []).filter((t) => !t.target.startsWith('cluster ')), ...targets];
  result.cluster = details;
  writeFileSync(latest, JSON.stringify(result, null, 2) + '\n');
  const stamped = join(dir, `bench-cluster-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(stamped, JSON.stringify({ summary, targets, cluster: details }, null, 2) + '\n');
  log(`\nwritten ${stamped} and merged into bench/results/latest.json`);
}
