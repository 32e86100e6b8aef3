// What the dev-server bench (bench/bench.ts) and the production-engine bench (bench/bench-cluster.ts) share:
// their settings, the baselines' worker, the floor, bare_shape and envrun modes, the measuring loop
// (warm-up, interleaved repetitions of c=1 and c=N series, CPU per run) and its statistics.
import { type Client, WithStartWorkflowOperation } from '@temporalio/client';
import { defineUpdate } from '@temporalio/workflow';
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import ts from 'typescript';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runWorkflowId } from '../contracts/index.js';
import { tsxLoaderUrl } from '../store/embedded.js';
import type { EnvRunAdmin } from '../client/admin.js';
import type { EnvRunClient } from '../client/runs.js';
import { DEFAULT_MAX_CACHED_WORKFLOWS } from '../worker/config.js';
import { deriveShape, type DerivedShape } from './bench-plan.js';
import { PeakRss, mb, median, pct, r1, r2, sleep, startWorkerProcess, type BenchProcess } from './bench-proc.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A non-negative number from the environment, `fallback` when unset. */
export const num = (name: string, fallback: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v}: not a number`);
  return n;
};
export const REPS = Math.max(1, num('BENCH_REPS', 5));
export const RUNS_C50 = num('BENCH_RUNS', 200);
export const RUNS_C1 = num('BENCH_C1_RUNS', Math.min(40, RUNS_C50));
export const CONCURRENCY = num('BENCH_CONCURRENCY', 50);
export const WARMUP = num('BENCH_WARMUP', 50);
export const CACHE = num('ENVRUN_MAX_CACHED_WORKFLOWS', DEFAULT_MAX_CACHED_WORKFLOWS);

export const readyUpdate = defineUpdate<string>('waitReady');
export const completeUpdate = defineUpdate<string>('complete');
export const now = () => performance.now();
export const log = (line: string) => console.log(line);

export interface Sample {
  /** The headline latency: start→ready (sandbox: start→exec returned). */
  ms: number;
  /** The complete update's latency (complete→released). */
  complete: number;
  extra?: Record<string, number>;
}
export interface Mode<N extends string = string> {
  name: N;
  /** The process whose CPU is "worker" CPU (null: none, the steps run in the bench process). */
  worker: BenchProcess | null;
  one(id: string): Promise<Sample>;
}
/** CPU ms (per run, in the figures): worker process (tree), Temporal server, PostgreSQL (tree), client. */
export type Cpu = { worker: number; server: number; postgres: number; client: number };
export interface Series<N extends string = string> {
  mode: N;
  concurrency: number;
  rep: number;
  runs: number;
  errors: number;
  firstError: string | null;
  latencies: number[];
  completes: number[];
  extra: Record<string, number[]>;
  wallMs: number;
  runsPerS: number;
  p50: number;
  p99: number;
  cpu: Cpu;
  peakWorkerVmRssMb: number | null;
}
export type RunSeries<N extends string = string> = (
  mode: Mode<N>,
  concurrency: number,
  runs: number,
  rep: number,
) => Promise<Series<N>>;
export interface Spread {
  median: number;
  min: number;
  max: number;
}
export interface ModeStats<N extends string = string> {
  mode: N;
  concurrency: number;
  reps: number;
  samples: number;
  errors: number;
  p50: Spread;
  p99: Spread;
  runsPerS: Spread;
  pooledP50: number;
  pooledP99: number;
  completeP50: number;
  cpu: Cpu;
  peakWorkerVmRssMb: number | null;
  extra: Record<string, { p50: number; p99: number }>;
}
export interface Target {
  target: string;
  measured: number | null;
  limit: number;
  pass: boolean | null;
}

/**
 * The baselines' workflow bundle, and their worker transpiled to plain JS beside node_modules (its imports
 * resolve from there).
 */
export async function bareArtifacts(tmp: string): Promise<{ bareBundle: string; bareWorkerJs: string }> {
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

/** Where workers log and the gc preload they take. */
interface WorkerPlace {
  tmp: string;
  preload: string;
}

/** Starts a baseline worker (bench/bench-bare-worker.ts) on `queue`. */
export function startBareWorker(
  o: WorkerPlace & { temporalAddress: string; bareBundle: string; bareWorkerJs: string },
  name: string,
  queue: string,
  cache: number,
): Promise<BenchProcess> {
  return startWorkerProcess({
    name,
    script: o.bareWorkerJs,
    env: {
      TEMPORAL_ADDRESS: o.temporalAddress,
      ENVRUN_TASK_QUEUE: queue,
      BENCH_HOST_QUEUE: `${queue}/host/bench-host`,
      BENCH_WORKFLOW_BUNDLE: o.bareBundle,
      ENVRUN_MAX_CACHED_WORKFLOWS: String(cache),
    },
    logFile: join(o.tmp, `${name}.log`),
    preload: o.preload,
  });
}

/** Starts envrun's worker from dist/ (or the sources through tsx), the reaper off. */
export function startEnvrunWorker(
  o: WorkerPlace & {
    name: string;
    runtime: 'dist' | 'tsx';
    nodeArgs?: string[];
    temporalAddress: string;
    namespace?: string;
    databaseUrl: string;
    queue: string;
    hostId: string;
    dataDir: string;
    bundle: string;
    cache: number;
  },
): Promise<BenchProcess> {
  return startWorkerProcess({
    name: o.name,
    script: join(ROOT, o.runtime === 'dist' ? 'dist/worker/main.js' : 'worker/main.ts'),
    nodeArgs: [...(o.runtime === 'tsx' ? ['--import', tsxLoaderUrl()] : []), ...(o.nodeArgs ?? [])],
    env: {
      TEMPORAL_ADDRESS: o.temporalAddress,
      ...(o.namespace === undefined ? {} : { TEMPORAL_NAMESPACE: o.namespace }),
      DATABASE_URL: o.databaseUrl,
      ENVRUN_TASK_QUEUE: o.queue,
      ENVRUN_HOST_ID: o.hostId,
      ENVRUN_DATA_DIR: o.dataDir,
      ENVRUN_WORKFLOW_BUNDLE: o.bundle,
      ENVRUN_REAPER_EVERY: 'off',
      ENVRUN_LOG_LEVEL: process.env.BENCH_WORKER_LOG_LEVEL ?? 'INFO', // INFO is envrun's default
      ENVRUN_MAX_CACHED_WORKFLOWS: String(o.cache),
    },
    logFile: join(o.tmp, `${o.name}.log`),
    preload: o.preload,
  });
}

/** The fake-sandbox environment the runs use, and a tiny workspace in `cwd`. */
export async function fakeEnvironment(admin: EnvRunAdmin, cwd: string): Promise<{ id: string }> {
  chmodSync(cwd, 0o755);
  writeFileSync(join(cwd, 'README'), 'a tiny workspace\n');
  return admin.createEnvironment({ companyId: 'bench', name: 'fake', driver: 'sandbox', config: { provider: 'fake' } });
}

/** A run's request: company `bench`, the workspace `cwd`. */
export const runRequest = (id: string, environmentId: string, cwd: string) => ({
  companyId: 'bench',
  heartbeatRunId: id,
  environmentId,
  workspace: { baseCwd: cwd, cwd },
});
export type RunRequest = ReturnType<typeof runRequest>;

/**
 * The shape of an envrun run, from a real run's history (after two warm-up runs), and the input that makes
 * bare_shape replay it: envrun's plan, padded to the size of envrun's input.
 */
export async function envrunShapeOf(
  client: EnvRunClient,
  request: (id: string) => RunRequest,
  token: string,
): Promise<{ envrunShape: DerivedShape; shapeInput: { plan: DerivedShape['plan']; hostQueue: string; pad: string } }> {
  const envrunOnce = async (id: string) => {
    await client.startRunAndWaitReady(request(id));
    await client.completeRun('bench', id, { status: 'succeeded' });
    return client.temporal.workflow.getHandle(runWorkflowId('bench', id)).fetchHistory();
  };
  for (let i = 0; i < 2; i++) await envrunOnce(`${token}-shape-warm-${i}`);
  const envrunShape = deriveShape(await envrunOnce(`${token}-shape`));
  const bare = { plan: envrunShape.plan, hostQueue: 'bench-shape/host/bench-host', pad: '' };
  const missing = envrunShape.inputBytes - Buffer.byteLength(JSON.stringify(bare));
  return { envrunShape, shapeInput: { ...bare, pad: 'x'.repeat(Math.max(0, missing)) } };
}

/** Starts a baseline workflow and waits for its ready update (update-with-start, as envrun's client does). */
export const bareStarter =
  (temporal: Client) => async (workflowType: string, queue: string, id: string, args: unknown[]) => {
    const op = new WithStartWorkflowOperation(workflowType, {
      workflowId: id,
      taskQueue: queue,
      workflowIdConflictPolicy: 'FAIL',
      args,
    });
    await temporal.workflow.executeUpdateWithStart(readyUpdate, { startWorkflowOperation: op });
    return op.workflowHandle();
  };
export type StartBare = ReturnType<typeof bareStarter>;

/** A baseline mode: start→ready is the update-with-start, then the complete update. */
export function bareMode<N extends string>(
  startBare: StartBare,
  name: N,
  worker: BenchProcess,
  workflowType: string,
  queue: string,
  args: unknown[],
): Mode<N> {
  return {
    name,
    worker,
    async one(id) {
      const t = now();
      const handle = await startBare(workflowType, queue, `${name}/${id}`, args);
      const ms = now() - t;
      const c = now();
      await handle.executeUpdate(completeUpdate);
      return { ms, complete: now() - c };
    },
  };
}

/** The shape of one completed baseline run, from its history. */
export async function bareShapeOf(
  startBare: StartBare,
  workflowType: string,
  queue: string,
  id: string,
  args: unknown[],
): Promise<DerivedShape> {
  const handle = await startBare(workflowType, queue, id, args);
  await handle.executeUpdate(completeUpdate);
  return deriveShape(await handle.fetchHistory());
}

/** envrun: start→ready is the client's startRunAndWaitReady, then completeRun. */
export function envrunMode(
  client: EnvRunClient,
  request: (id: string) => RunRequest,
  worker: BenchProcess,
): Mode<'envrun'> {
  return {
    name: 'envrun',
    worker,
    async one(id) {
      const t = now();
      await client.startRunAndWaitReady(request(id));
      const ms = now() - t;
      const c = now();
      await client.completeRun('bench', id, { status: 'succeeded' });
      return { ms, complete: now() - c };
    },
  };
}

/**
 * One series: `runs` runs of a mode, `concurrency` at a time; latencies, throughput and CPU per run
 * (`cpuOf` reads the processes' CPU ms; no worker CPU for a mode without a worker process), and with
 * `peakRss` the worker's peak VmRSS.
 */
export function seriesRunner<N extends string>(o: {
  token: string;
  cpuOf: (mode: Mode<N>) => Cpu;
  peakRss: boolean;
}): RunSeries<N> {
  return async (mode, concurrency, runs, rep) => {
    const latencies: number[] = [];
    const completes: number[] = [];
    const extra: Record<string, number[]> = {};
    let errors = 0;
    let firstError: string | null = null;
    let next = 0;
    const peak = o.peakRss && mode.worker ? new PeakRss(mode.worker.pid) : null;
    peak?.start();
    const cpu0 = o.cpuOf(mode);
    const t = now();
    await Promise.all(
      Array.from({ length: Math.min(concurrency, runs) }, async () => {
        while (next < runs) {
          const i = next++;
          try {
            const s = await mode.one(`${mode.name}-${o.token}-c${concurrency}-r${rep}-${i}`);
            latencies.push(s.ms);
            completes.push(s.complete);
            for (const [k, v] of Object.entries(s.extra ?? {})) (extra[k] ??= []).push(v);
          } catch (err) {
            errors++;
            firstError ??= (err as Error).message;
          }
        }
      }),
    );
    const wallMs = now() - t;
    const cpu1 = o.cpuOf(mode);
    const per = (k: keyof Cpu) => (mode.worker || k !== 'worker' ? r1((cpu1[k] - cpu0[k]) / runs) : 0);
    const peakVm = peak?.stop() ?? null;
    return {
      mode: mode.name,
      concurrency,
      rep,
      runs,
      errors,
      firstError,
      latencies,
      completes,
      extra,
      wallMs,
      runsPerS: r1((latencies.length / wallMs) * 1000),
      p50: r1(pct(latencies, 50)),
      p99: r1(pct(latencies, 99)),
      cpu: { worker: per('worker'), server: per('server'), postgres: per('postgres'), client: per('client') },
      peakWorkerVmRssMb: peakVm === null ? null : mb(peakVm),
    };
  };
}

/** Warm-up (JIT, connections, caches): a few runs at c=1, then WARMUP at c=N, which must all succeed. */
export async function warmUp<N extends string>(modes: Array<Mode<N>>, runSeries: RunSeries<N>): Promise<void> {
  for (const m of modes) {
    await runSeries(m, 1, Math.min(5, WARMUP), -1);
    const w = await runSeries(m, CONCURRENCY, WARMUP, -2);
    if (w.errors) throw new Error(`warm-up of ${m.name}: ${w.errors} failed runs: ${w.firstError}`);
  }
}

/**
 * REPS interleaved repetitions, the order rotating each time: every c=1 mode (`c1Runs` runs each), then
 * every c=N mode (RUNS_C50 runs), a short pause between series.
 */
export async function interleaved<N extends string>(o: {
  c1: Array<Mode<N>>;
  c1Runs: (mode: Mode<N>) => number;
  cN: Array<Mode<N>>;
  runSeries: RunSeries<N>;
  prefix: string;
}): Promise<Array<Series<N>>> {
  const all: Array<Series<N>> = [];
  const repStarted = now();
  for (let rep = 0; rep < REPS; rep++) {
    const rot = <T>(xs: T[]) => xs.map((_, i) => xs[(i + rep) % xs.length]!);
    for (const m of rot(o.c1)) {
      const runs = o.c1Runs(m);
      if (runs > 0) all.push(await o.runSeries(m, 1, runs, rep));
      await sleep(300);
    }
    for (const m of rot(o.cN)) {
      if (RUNS_C50 > 0) all.push(await o.runSeries(m, CONCURRENCY, RUNS_C50, rep));
      await sleep(500);
    }
    const done = all.filter((s) => s.rep === rep);
    log(
      `${o.prefix} rep ${rep + 1}/${REPS} (${Math.round((now() - repStarted) / 1000)} s): ` +
        done.map((s) => `${s.mode}@c${s.concurrency} p50 ${s.p50} ms ${s.runsPerS}/s`).join('; '),
    );
    for (const s of done)
      if (s.errors) log(`  WARNING: ${s.mode}@c${s.concurrency}: ${s.errors} failed: ${s.firstError}`);
  }
  return all;
}

/** Per mode and concurrency: the median of the repetitions' values with their min–max, and pooled percentiles. */
export function aggregate<N extends string>(all: Array<Series<N>>): Record<string, ModeStats<N>> {
  const groups = new Map<string, Array<Series<N>>>();
  for (const s of all) {
    const key = `${s.mode}@${s.concurrency}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  const spread = (xs: number[]): Spread => ({
    median: r1(median(xs)),
    min: r1(Math.min(...xs)),
    max: r1(Math.max(...xs)),
  });
  const out: Record<string, ModeStats<N>> = {};
  for (const [key, ss] of groups) {
    const lat = ss.flatMap((s) => s.latencies);
    const extraKeys = [...new Set(ss.flatMap((s) => Object.keys(s.extra)))];
    const cpuMed = (k: keyof Cpu) => r1(median(ss.map((s) => s.cpu[k])));
    out[key] = {
      mode: ss[0]!.mode,
      concurrency: ss[0]!.concurrency,
      reps: ss.length,
      samples: lat.length,
      errors: ss.reduce((n, s) => n + s.errors, 0),
      p50: spread(ss.map((s) => s.p50)),
      p99: spread(ss.map((s) => s.p99)),
      runsPerS: spread(ss.map((s) => s.runsPerS)),
      pooledP50: r1(pct(lat, 50)),
      pooledP99: r1(pct(lat, 99)),
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
      peakWorkerVmRssMb:
        ss[0]!.peakWorkerVmRssMb === null ? null : Math.max(...ss.map((s) => s.peakWorkerVmRssMb ?? 0)),
      extra: Object.fromEntries(
        extraKeys.map((k) => {
          const xs = ss.flatMap((s) => s.extra[k] ?? []);
          return [k, { p50: r1(pct(xs, 50)), p99: r1(pct(xs, 99)) }];
        }),
      ),
    };
  }
  return out;
}

/** A mode's figures at c=1 or at c=N. */
export const statsAt =
  <S extends { mode: string }>(stats: Record<string, S>) =>
  (mode: S['mode'], c: 1 | 'n'): S | undefined =>
    stats[`${mode}@${c === 1 ? 1 : CONCURRENCY}`];
/** A figure, null when it was not measured (or is not a number). */
export const orNull = (x: number | null | undefined) =>
  x === undefined || x === null || !Number.isFinite(x) ? null : x;
export const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : r2(a / b));
export const target = (name: string, measured: number | null, limit: number, kind: '≤' | '≥'): Target => ({
  target: name,
  measured,
  limit,
  pass: measured === null ? null : kind === '≤' ? measured <= limit : measured >= limit,
});

/** `o` without `keys`, its other fields in their order (what a bench writes leaves out fields it does not use). */
export const without = <T extends object, K extends keyof T>(o: T, ...keys: K[]): Omit<T, K> =>
  Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k as K))) as Omit<T, K>;

export const spreadText = (s: Spread) => `${s.median} (${s.min}–${s.max})`;
export const cpuText = (c: Cpu) => `${c.worker} / ${c.server} / ${c.postgres} / ${c.client}`;
/** The targets as rows of a console table. */
export const targetRows = (targets: Target[]) =>
  targets.map((t) => ({
    target: t.target,
    measured: t.measured,
    limit: t.limit,
    result: t.pass === null ? 'not measured' : t.pass ? 'pass' : 'FAIL',
  }));
