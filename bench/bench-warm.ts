// `npm run bench:warm`: what a warm pool saves. A bubblewrap environment whose pool keeps one sandbox
// realized from a 1,000-file base and provisioned with `npm ci --offline` (envrun's own lockfile, a few
// hundred packages, from a copy of the local npm cache bound read-only), against an identical environment
// without a pool. Per repetition (interleaved): once the pool is full and idle and every earlier run's
// sandbox is removed, a tiny run (one file, no provision command: the floor of the moment), a warm run
// (start→ready, start→first output; it must have taken the pooled sandbox and skipped the provision
// command, else the bench fails), then, once the pool has refilled, a cold run of the same base and command. One dev server, one embedded PostgreSQL, envrun's
// real worker from dist/. Prints where each run's time went (the worker's step lines) and merges its keys
// into bench/results/latest.json.
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { sql } from 'drizzle-orm';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import {
  POOL_RUN_PREFIX,
  runWorkflowId,
  type Environment,
  type PooledLeaseInfo,
  type RunResult,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { CACHE, bareArtifacts, bareMode, bareStarter, startBareWorker } from './bench-modes.js';
import {
  benchTarget,
  median,
  mergeIntoLatest,
  r1,
  r2,
  sleep,
  startBenchStack,
  writeGcPreload,
  type BenchStack,
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
/** Repetitions of the tiny and the warm run first, not counted (the first of a path is slow). */
const WARMUP = num('BENCH_WARMUP', 1);
/** Tiny runs back to back before each warm one. */
const TINY_RUNS = Math.max(1, num('BENCH_WARM_TINY_RUNS', 5));
/**
 * Temporal's own floor, measured beside the runs: a bare workflow with one activity (update-with-start to
 * ready, as `npm run bench`'s `floor` mode), this many back to back before each repetition's tiny runs.
 * What a hop costs on the machine of the day: the warm figures are read against it.
 */
const FLOOR_RUNS = Math.max(1, num('BENCH_WARM_FLOOR_RUNS', 5));
/** The base's small files (besides package.json and package-lock.json). */
const FILES = 1000;
const COMPANY = 'bench';
const log = (line: string) => console.log(`[bench:warm] ${line}`);
const now = () => performance.now();
const loadAvg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/**
 * The provision command. npm rewrites its cache's index as it reads it (a read-only cache fails with
 * ENOTCACHED), so the index is copied into the sandbox's /tmp and the content, the bulk, is linked from the
 * read-only mount.
 */
const PROVISION =
  'mkdir -p /tmp/c/_cacache && cp -r /npm-cache/_cacache/index-v5 /tmp/c/_cacache/ && ' +
  'ln -s /npm-cache/_cacache/content-v2 /tmp/c/_cacache/content-v2 && ' +
  'HOME=/tmp npm ci --offline --cache /tmp/c --ignore-scripts --no-audit --no-fund --loglevel=error';

/** The local npm cache (`npm config get cache`), or null when it has no content. */
function npmCache(): string | null {
  const r = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' });
  const dir = r.status === 0 ? join(r.stdout.trim(), '_cacache') : null;
  return dir && existsSync(join(dir, 'index-v5')) && existsSync(join(dir, 'content-v2')) ? dir : null;
}

/** The cache copied into `tmp` (readable by the sandbox's uid), and the 1,000-file base beside it. */
function prepare(tmp: string, cache: string): { cacheCopy: string; base: string } {
  const cacheCopy = join(tmp, 'npm-cache');
  mkdirSync(join(cacheCopy, '_cacache'), { recursive: true });
  const t = now();
  for (const part of ['index-v5', 'content-v2']) {
    const cp = spawnSync('cp', ['-r', join(cache, part), join(cacheCopy, '_cacache', part)], { stdio: 'inherit' });
    if (cp.status !== 0) throw new Error(`copying ${join(cache, part)} failed (${cp.status})`);
  }
  const chmod = spawnSync('chmod', ['-R', 'a+rX', cacheCopy], { stdio: 'inherit' });
  if (chmod.status !== 0) throw new Error(`chmod -R a+rX ${cacheCopy} failed (${chmod.status})`);
  log(`npm cache copied into the bench folder in ${r1((now() - t) / 1000)} s`);
  const base = join(tmp, 'base');
  mkdirSync(join(base, 'src'), { recursive: true });
  for (let i = 0; i < FILES; i++) {
    const name = `f${String(i).padStart(4, '0')}.txt`;
    writeFileSync(join(base, 'src', name), `file ${i}\n${'x'.repeat(64 + (i % 128))}\n`);
  }
  copyFileSync(join(ROOT, 'package.json'), join(base, 'package.json'));
  copyFileSync(join(ROOT, 'package-lock.json'), join(base, 'package-lock.json'));
  return { cacheCopy, base };
}

interface Sample {
  id: string;
  /** Wall clock of the start request (the worker's log lines are read against it). */
  startedAt: number;
  /** The same instant on the monotonic clock, in µs (the clock of the worker's CPU profile). */
  startedUs: number;
  ready: number;
  firstOutput: number;
  /** From the run's own timestamps (workflow time): requested→leased, leased→realized. */
  phases: { lease: number; realize: number };
  upload: string;
  provisionMs: number;
}

interface StepLine {
  time: string;
  msg: string;
  step?: string;
  workflowId?: string;
  durationMs?: number;
}

/** The worker's `step started` / `step finished` lines, read from its log. */
function stepLines(logFile: string): StepLine[] {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"step '))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as StepLine];
      } catch {
        return [];
      }
    });
}

/**
 * Where a run's time went, in ms, from the worker's step lines (wall clock, ms resolution) and the
 * bench's own clock: the segments add up to start→first output.
 */
const SEGMENTS = [
  'start→first step',
  'resolve',
  'take/acquire',
  '→prepare',
  'prepare',
  'prepare→ready',
  'ready→exec',
  'exec',
  'exec→output',
] as const;
function segmentsOf(lines: StepLine[], s: Sample): Record<(typeof SEGMENTS)[number], number> {
  const workflowId = runWorkflowId(COMPANY, s.id);
  const step = (name: string) => {
    const started = lines.find((l) => l.workflowId === workflowId && l.step === name && l.msg === 'step started');
    const done = lines.find((l) => l.workflowId === workflowId && l.step === name && l.msg === 'step finished');
    return { at: started ? Date.parse(started.time) - s.startedAt : NaN, ms: done?.durationMs ?? NaN };
  };
  const resolve = step('resolveEnvironment');
  const taken = step('takePooled');
  const acquired = step('acquireLease');
  // A warm run takes in its resolve step (no step of its own): its take/acquire segment is 0.
  const lease = Number.isFinite(taken.at)
    ? taken
    : Number.isFinite(acquired.at)
      ? acquired
      : { at: resolve.at + resolve.ms, ms: 0 };
  const prepare = step('prepareWorkspace');
  const exec = step('execCommand');
  return {
    'start→first step': resolve.at,
    resolve: resolve.ms,
    'take/acquire': lease.ms,
    '→prepare': prepare.at - (lease.at + lease.ms),
    prepare: prepare.ms,
    'prepare→ready': s.ready - (prepare.at + prepare.ms),
    'ready→exec': exec.at - s.ready,
    exec: exec.ms,
    'exec→output': s.firstOutput - (exec.at + exec.ms),
  };
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const cache = npmCache();
  if (!cache) {
    log('skipped: no npm cache with content (npm config get cache; run npm ci once to fill it)');
    return;
  }
  let paths: { cacheCopy: string; base: string } | null = null;
  const stack: BenchStack = await startBenchStack({
    name: 'bench-warm',
    taskQueue: 'bench-warm',
    log,
    // The mount's source and the base must be inside the workspace roots, for the worker and the admin.
    workerEnv: (tmp) => ({ ENVRUN_WORKSPACE_ROOTS: tmp }),
    prepare: (tmp) => void (paths = prepare(tmp, cache)),
  });
  const floorWorker = await startBareWorker(
    {
      tmp: stack.tmp,
      preload: pathToFileURL(writeGcPreload(stack.tmp)).href,
      temporalAddress: stack.temporalAddress,
      ...(await bareArtifacts(stack.tmp)),
    },
    'floor-worker',
    'bench-warm-floor',
    CACHE,
  ).catch(async (err: unknown) => {
    await stack.stop();
    throw err;
  });
  try {
    const { base, cacheCopy } = paths!;
    const { admin, client, store } = stack;
    const floor = bareMode(bareStarter(client.temporal), 'floor', floorWorker, 'benchFloor', 'bench-warm-floor', []);
    const token = Date.now().toString(36);
    const sandbox = {
      provider: 'bubblewrap',
      network: 'none',
      // The run's node_modules stays in the sandbox: nothing is synced back into the base.
      discardChanges: true,
      mounts: [{ source: cacheCopy, target: '/npm-cache' }],
    };
    const warmEnv = await admin.createEnvironment({
      companyId: COMPANY,
      name: 'warm',
      driver: 'sandbox',
      config: {
        ...sandbox,
        warmPool: {
          size: 1,
          maxIdle: '1h',
          base: { cwd: base, provisionCommand: PROVISION, fingerprintFiles: ['package-lock.json'] },
        },
      },
    });
    const coldEnv = await admin.createEnvironment({
      companyId: COMPANY,
      name: 'cold',
      driver: 'sandbox',
      config: sandbox,
    });

    /** Until the pool's one sandbox is ready and its workflow has seen it so, with nothing filling. */
    const fullPool = async (env: Environment) => {
      const t = now();
      for (;;) {
        const rows = await store.listPooledLeases(COMPANY, env.id);
        const ready = rows.filter((l) => (l.metadata?.pool as PooledLeaseInfo | undefined)?.state === 'ready');
        const seen = await admin.getPool(COMPANY, env.id);
        const seenReady = seen?.members.filter((m) => m.state === 'ready').map((m) => m.leaseId) ?? [];
        if (
          ready.length === 1 &&
          rows.length === 1 &&
          seen?.members.length === 1 &&
          seenReady.join() === ready.map((l) => l.id).join()
        ) {
          return now() - t;
        }
        if (seen?.note?.startsWith('a fill failed')) throw new Error(`the pool cannot fill: ${seen.note}`);
        if (now() - t > 15 * 60_000) throw new Error(`the pool did not fill within 15 min: ${JSON.stringify(seen)}`);
        await sleep(100);
      }
    };

    const tiny = join(stack.tmp, 'tiny');
    mkdirSync(tiny);
    writeFileSync(join(tiny, 'README'), 'a tiny workspace\n');

    /** One run: start→ready, then `echo first output`, then complete. The tiny run has no provision command. */
    const oneRun = async (env: Environment, id: string, cwd = base): Promise<{ sample: Sample; result: RunResult }> => {
      const startedAt = Date.now();
      const startedUs = Number(process.hrtime.bigint() / 1000n);
      const t = now();
      const result = await client.startRunAndWaitReady({
        companyId: COMPANY,
        heartbeatRunId: id,
        environmentId: env.id,
        workspace: { baseCwd: cwd, cwd },
        ...(cwd === base ? { runtimeOverlay: { provisionCommand: PROVISION } } : {}),
      });
      const ready = now() - t;
      const out = await client.exec(COMPANY, id, { command: 'echo', args: ['first output'], timeoutMs: 30_000 });
      const firstOutput = now() - t;
      if (out.exitCode !== 0 || !out.stdout.includes('first output')) {
        throw new Error(`${id}: echo exited ${out.exitCode}: ${out.stderr.slice(0, 300)}`);
      }
      const ts = (await client.getRun(COMPANY, id))!.timestamps;
      const at = (x: string | null) => (x ? Date.parse(x) : NaN);
      const record = result.lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      await client.completeRun(COMPANY, id, { status: 'succeeded' });
      return {
        result,
        sample: {
          id,
          startedAt,
          startedUs,
          ready,
          firstOutput,
          phases: { lease: at(ts.leased) - at(ts.requested), realize: at(ts.realized) - at(ts.leased) },
          upload: String((record?.rebuild?.metadata as { upload?: string } | undefined)?.upload ?? '?'),
          provisionMs: record?.bootstrap.durationMs ?? NaN,
        },
      };
    };
    const describe = (s: Sample) =>
      `start→ready ${r1(s.ready)} ms, first output ${r1(s.firstOutput)} ms (run's clock: lease ${s.phases.lease}, ` +
      `realize ${s.phases.realize} ms; upload ${s.upload}; provision ${s.provisionMs} ms)`;

    /** A warm run: it must have taken the pooled sandbox and skipped provisioning, else the figure is not warm. */
    const warmRun = async (id: string, at: string) => {
      const w = await oneRun(warmEnv, id);
      const pool = w.result.lease.metadata?.pool as PooledLeaseInfo | undefined;
      const record = w.result.lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      if (pool?.state !== 'taken') {
        throw new Error(`${at} the warm run did not take the pooled sandbox (pool ${JSON.stringify(pool)})`);
      }
      if (record?.bootstrap.provisionedByPool !== true) {
        throw new Error(
          `${at} the warm run ran the provision command (bootstrap ${JSON.stringify(record?.bootstrap)})`,
        );
      }
      return w.sample;
    };

    /**
     * Until no run's lease of the bench is held or still being cleaned up: a run's release removes its
     * sandbox, a whole node_modules for a cold or a warm run, and would share the cores with what is
     * measured next.
     */
    const settled = async () => {
      for (const t = now(); ;) {
        const r = await store.db.execute(sql`
          select count(*)::int as n from environment_leases
          where company_id = ${COMPANY} and not starts_with(heartbeat_run_id, ${POOL_RUN_PREFIX})
            and (status = 'active' or cleanup_status = 'pending')`);
        if (Number(r.rows[0]?.n) === 0) return;
        if (now() - t > 5 * 60_000) throw new Error("the runs' leases were not released within 5 min");
        await sleep(100);
      }
    };

    const warm: Sample[] = [];
    const cold: Sample[] = [];
    const small: Sample[] = [];
    const floors: number[] = [];
    log(`base: ${FILES} files + package.json and package-lock.json; load average ${loadAvg()}`);
    for (let rep = -WARMUP; rep < REPS; rep++) {
      const at = rep < 0 ? 'warm-up:' : `rep ${rep + 1}/${REPS}:`;
      const filled = await fullPool(warmEnv);
      await settled();
      log(`${at} pool full (waited ${r1(filled / 1000)} s); load ${loadAvg()}`);
      // The same path without the pool and the 1,000 files, a few times back to back just before: the floor
      // of this moment, and a worker, a server and a database as warm as a busy deployment's (not idle
      // since the last cold run, whose provision took seconds).
      const floorMs: number[] = [];
      for (let k = 0; k < FLOOR_RUNS; k++) floorMs.push((await floor.one(`${token}-floor-${rep}-${k}`)).ms);
      log(`${at} Temporal floor ×${FLOOR_RUNS}: start→ready ${floorMs.map(r1).join(', ')} ms`);
      const tinies: Sample[] = [];
      for (let k = 0; k < TINY_RUNS; k++)
        tinies.push((await oneRun(coldEnv, `${token}-tiny-${rep}-${k}`, tiny)).sample);
      log(`${at} tiny ×${TINY_RUNS}: start→ready ${tinies.map((x) => r1(x.ready)).join(', ')} ms`);
      await settled();
      const w = await warmRun(`${token}-warm-${rep}`, at);
      log(`${at} warm ${describe(w)}`);
      if (rep < 0) continue;
      small.push(...tinies);
      floors.push(...floorMs);
      warm.push(w);
      // The cold run does not share the CPU with the pool's refill.
      await fullPool(warmEnv);
      await settled();
      const c = await oneRun(coldEnv, `${token}-cold-${rep}`);
      const coldRecord = c.result.lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      if (c.result.lease.metadata?.pool || coldRecord?.bootstrap.provisionedByPool !== undefined) {
        throw new Error(`${at} the cold run was served by a pool`);
      }
      cold.push(c.sample);
      log(`${at} cold ${describe(c.sample)}; load ${loadAvg()}`);
    }

    const spread = (xs: number[]) => `${r1(median(xs))} (${r1(Math.min(...xs))}–${r1(Math.max(...xs))})`;
    const pick = (xs: Sample[], f: (s: Sample) => number) => xs.map(f);
    const summary = {
      warm_start_to_ready_p50_ms: r1(median(pick(warm, (s) => s.ready))),
      warm_start_to_ready_min_ms: r1(Math.min(...pick(warm, (s) => s.ready))),
      warm_start_to_ready_max_ms: r1(Math.max(...pick(warm, (s) => s.ready))),
      warm_first_output_p50_ms: r1(median(pick(warm, (s) => s.firstOutput))),
      cold_start_to_ready_p50_ms: r1(median(pick(cold, (s) => s.ready))),
      cold_start_to_ready_min_ms: r1(Math.min(...pick(cold, (s) => s.ready))),
      cold_start_to_ready_max_ms: r1(Math.max(...pick(cold, (s) => s.ready))),
      cold_first_output_p50_ms: r1(median(pick(cold, (s) => s.firstOutput))),
      cold_vs_warm_start_to_ready: r2(median(pick(cold, (s) => s.ready)) / median(pick(warm, (s) => s.ready))),
      warm_bench_tiny_start_to_ready_p50_ms: r1(median(pick(small, (s) => s.ready))),
      warm_bench_tiny_first_output_p50_ms: r1(median(pick(small, (s) => s.firstOutput))),
      warm_bench_floor_c1_p50_ms: r1(median(floors)),
      warm_vs_floor_start_to_ready: r2(median(pick(warm, (s) => s.ready)) / median(floors)),
      warm_first_output_vs_floor: r2(median(pick(warm, (s) => s.firstOutput)) / median(floors)),
    };
    console.log(`\n[bench:warm] ${REPS} repetitions; median (min–max), ms`);
    console.log(`  warm start→ready:    ${spread(pick(warm, (s) => s.ready))}`);
    console.log(`  warm first output:   ${spread(pick(warm, (s) => s.firstOutput))}`);
    console.log(`  cold start→ready:    ${spread(pick(cold, (s) => s.ready))}`);
    console.log(`  cold first output:   ${spread(pick(cold, (s) => s.firstOutput))}`);
    console.log(`  cold provision:      ${spread(pick(cold, (s) => s.provisionMs))}`);
    console.log(`  tiny start→ready:    ${spread(pick(small, (s) => s.ready))} (one file, no pool, no provision)`);
    console.log(`  tiny first output:   ${spread(pick(small, (s) => s.firstOutput))}`);
    console.log(`  Temporal floor:      ${spread(floors)} (a bare workflow, one activity)`);
    console.log(
      `  warm / floor: start→ready ${summary.warm_vs_floor_start_to_ready}×, first output ${summary.warm_first_output_vs_floor}×`,
    );
    console.log(`  cold / warm start→ready: ${summary.cold_vs_warm_start_to_ready}×; load average ${loadAvg()}`);

    // Where the time goes: each segment's median over the repetitions (worker step lines, ms resolution).
    const lines = stepLines(stack.worker.logFile);
    const table = (name: string, xs: Sample[]) => {
      const rows = xs.map((x) => segmentsOf(lines, x));
      return `| ${name} | ${SEGMENTS.map((k) => r1(median(rows.map((r) => r[k])))).join(' | ')} |`;
    };
    console.log(`\n[bench:warm] where the time goes, median ms (steps from the worker's log)`);
    console.log(`| run | ${SEGMENTS.join(' | ')} |\n| --- |${' --- |'.repeat(SEGMENTS.length)}`);
    console.log(table('tiny', small));
    console.log(table('warm', warm));
    console.log(table('cold', cold));
    console.log(`\n[bench:warm] summary ${JSON.stringify(summary)}`);
    if (process.env.BENCH_PROFILE) {
      // Each run's start→ready and ready→first output on the profile's clock, to read the profile by window.
      const windows = Object.entries({ tiny: small, warm, cold }).flatMap(([kind, xs]) =>
        xs.flatMap((x) => [
          { kind: `${kind} start→ready`, id: x.id, fromUs: x.startedUs, toUs: x.startedUs + x.ready * 1000 },
          {
            kind: `${kind} ready→first output`,
            id: x.id,
            fromUs: x.startedUs + x.ready * 1000,
            toUs: x.startedUs + x.firstOutput * 1000,
          },
        ]),
      );
      mkdirSync(process.env.BENCH_PROFILE, { recursive: true });
      writeFileSync(join(process.env.BENCH_PROFILE, 'windows.json'), JSON.stringify(windows, null, 2));
      log(`run windows for the worker's profile in ${join(process.env.BENCH_PROFILE, 'windows.json')}`);
    }

    const targets = [
      benchTarget('warm start→ready p50 ≤ 150 ms', summary.warm_start_to_ready_p50_ms, 150, '≤'),
      benchTarget('warm start→first output p50 ≤ 100 ms', summary.warm_first_output_p50_ms, 100, '≤'),
    ];
    console.log('\n| figure | measured | target | met |\n| --- | --- | --- | --- |');
    for (const t of targets) {
      console.log(
        `| ${t.target} | ${t.measured ?? '–'} | ${t.limit} | ${t.pass === null ? 'not measured' : t.pass ? 'yes' : 'NO'} |`,
      );
    }
    const written = mergeIntoLatest(summary, targets, 'warm ');
    if (written) log(`merged into ${written}`);
  } finally {
    await floorWorker.stop();
    await stack.stop();
  }
}

await main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
