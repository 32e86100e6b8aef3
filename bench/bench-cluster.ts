// `npm run bench -- --engine cluster`: the bench's floor, bare_shape and envrun modes on the production engine,
// the Temporal server on PostgreSQL as four service processes (test/cluster/harness.ts). The server runs
// deploy/dynamicconfig.yaml, as docker-compose.yml mounts it, and every other setting at its default: the
// transfer queue read at most 20 times a second per shard (the dev-server bench reads it 1000 times), 4
// history shards, 4 task-queue partitions. Same workers, same shape and the same method as the dev-server
// bench (docs/benchmarks.md, "Production engine"); the figures are merged into bench/results/latest.json as
// `cluster_*` keys, with where they came from under `cluster`.
import { Client, Connection } from '@temporalio/client';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createProviders } from '../drivers/providers/load.js';
import { createDrivers } from '../drivers/registry.js';
import { openDatabase } from '../store/db.js';
import { Store } from '../store/store.js';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { ensureTemporalServer } from '../scripts/temporal-server.js';
import { startCluster, TEMPORAL_SERVICES, type Cluster } from '../test/cluster/harness.js';
import { withPg } from '../test/cluster/processes.js';
import { compareShapes } from './bench-plan.js';
import { cpuSnapshot, r1, sleep, writeGcPreload } from './bench-proc.js';
import {
  CACHE,
  CONCURRENCY,
  REPS,
  ROOT,
  RUNS_C1,
  RUNS_C50,
  WARMUP,
  aggregate,
  bareArtifacts,
  bareMode,
  bareShapeOf,
  bareStarter,
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
  without,
  type Cpu,
  type Mode,
  type ModeStats,
  type RunSeries,
  type Target,
} from './bench-modes.js';

/** Runs per mode of the PostgreSQL transaction count (0: none). */
const PG_RUNS = num('BENCH_CLUSTER_PG_RUNS', RUNS_C1);
/** A backend flushes its statistics within 10 s of going idle: wait longer than that before a reading. */
const PG_SETTLE_MS = 11_000;
const DATABASES = ['temporal', 'temporal_visibility', 'envrun'] as const;

type ClusterMode = 'floor' | 'bare_shape' | 'envrun';
/** The figures both engines report (the dev server's add pooledP50, the worker's peak VmRSS and extras). */
export type ClusterModeStats = Omit<ModeStats<ClusterMode>, 'pooledP50' | 'peakWorkerVmRssMb' | 'extra'>;

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
    const artifacts = (settled[1] as PromiseFulfilledResult<Awaited<ReturnType<typeof bareArtifacts>>>).value;
    const state = cluster.state();
    const engine = await engineInfo(state.pgAdminUrl);
    log(`[bench:cluster] ${engine.server} on ${engine.persistence}`);

    const dataDir = join(tmp, 'data');
    const place = { tmp, preload, temporalAddress: state.temporalAddress };
    const bare = { ...place, ...artifacts };
    const [envrunWorker, floorWorker, shapeWorker] = await Promise.all([
      startEnvrunWorker({
        ...place,
        name: 'envrun-worker',
        runtime: options.runtime,
        namespace: state.namespace,
        databaseUrl: state.databaseUrl,
        queue: 'bench',
        hostId: 'bench-host',
        dataDir,
        bundle: state.workflowBundle,
        cache: CACHE,
      }),
      startBareWorker(bare, 'floor-worker', 'bench-floor', CACHE),
      startBareWorker(bare, 'shape-worker', 'bench-shape', CACHE),
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
    const cwd = mkdtempSync(join(tmp, 'ws-'));
    const env = await fakeEnvironment(admin, cwd);
    const request = (id: string) => runRequest(id, env.id, cwd);

    // envrun's shape, from a real run's history on this engine; bare_shape replays it.
    const { envrunShape, shapeInput } = await envrunShapeOf(client, request, token);
    const startBare = bareStarter(temporal);
    const modes: Array<Mode<ClusterMode>> = [
      bareMode(startBare, 'floor', floorWorker, 'benchFloor', 'bench-floor', []),
      bareMode(startBare, 'bare_shape', shapeWorker, 'benchShape', 'bench-shape', [shapeInput]),
      envrunMode(client, request, envrunWorker),
    ];

    // CPU of the worker's tree, the four Temporal services' trees, PostgreSQL's (postmaster and backends:
    // Temporal's persistence and envrun's store).
    const postmaster = Number(readFileSync(join(state.dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const cpuOf = (mode: Mode<ClusterMode>): Cpu => {
      const services = Object.fromEntries(
        TEMPORAL_SERVICES.map((s) => [s, { pid: cluster.state().services[s].pid ?? -1, tree: true }]),
      );
      const snap = cpuSnapshot({
        ...services,
        worker: { pid: mode.worker?.pid ?? -1, tree: true },
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
    const runSeries = seriesRunner({ token, cpuOf, peakRss: false });

    log('[bench:cluster] warm-up');
    await warmUp(modes, runSeries);
    const bareShapeShape = await bareShapeOf(
      startBare,
      'benchShape',
      'bench-shape',
      `bare_shape/${token}-shape-check`,
      [shapeInput],
    );
    const mismatches = compareShapes(envrunShape, bareShapeShape, ['envrun', 'bare_shape']);
    for (const m of mismatches) log(`WARNING: shape mismatch: ${m}`);
    if (!mismatches.length) log('shape check: bare_shape matches envrun task for task');

    // Interleaved repetitions, the order rotating, as on the dev server.
    const all = await interleaved({
      c1: modes,
      c1Runs: () => RUNS_C1,
      cN: modes,
      runSeries,
      prefix: '[bench:cluster]',
    });
    const stats: Record<string, ClusterModeStats> = Object.fromEntries(
      Object.entries(aggregate(all)).map(([k, s]) => [k, without(s, 'pooledP50', 'peakWorkerVmRssMb', 'extra')]),
    );

    // PostgreSQL transactions and rows written per run, per database, c=1, less the idle rate.
    const quiet = PG_RUNS > 0 ? await pgPerRun(state.pgAdminUrl, modes, runSeries, cpuOf) : null;
    const transactions = quiet?.perRun ?? null;
    if (quiet) log(`[bench:cluster] PostgreSQL per run: ${JSON.stringify(quiet.perRun)}`);
    if (quiet) log(`[bench:cluster] idle CPU ms/s: ${JSON.stringify(quiet.idleCpuMsPerS)}`);

    const m = statsAt(stats);
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
      series: all.map((s) => ({
        ...without(s, 'extra', 'peakWorkerVmRssMb'),
        latencies: s.latencies.map(r1),
        completes: s.completes.map(r1),
      })),
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
  modes: Array<Mode<ClusterMode>>,
  runSeries: RunSeries<ClusterMode>,
  cpuOf: (mode: Mode<ClusterMode>) => Cpu,
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

function printResults(
  stats: Record<string, ClusterModeStats>,
  summary: Record<string, number | null>,
  targets: Target[],
): void {
  log('\nproduction engine, per mode: median of the repetitions (min–max); p99 over every sample');
  console.table(
    Object.values(stats).map((s) => ({
      mode: s.mode,
      c: s.concurrency,
      samples: s.samples,
      errors: s.errors,
      'p50 ms': spreadText(s.p50),
      'pooled p99': s.pooledP99,
      'runs/s': spreadText(s.runsPerS),
      'complete p50': s.completeP50,
      'CPU ms/run w/srv/pg/cli': cpuText(s.cpu),
    })),
  );
  console.table(Object.entries(summary).map(([key, value]) => ({ key, value })));
  console.table(targetRows(targets));
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
