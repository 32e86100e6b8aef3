// Latency probe: where do the ~40–50 ms steps of `npm run bench` come from? A diagnostic, not part of the bench.
//
//   npx tsx bench/latency-probe.ts [--configs a,b,...] [--samples 30] [--reps 3] [--only floor,seq0,...]
//   npx tsx bench/latency-probe.ts --list          # the configurations it knows
//
// For each named configuration (CONFIGS below: dev-server dynamic config over DEV_SERVER_DYNAMIC_CONFIG,
// Worker options, worker env) it starts its own dev server (scripts/dev-server.ts, headless, in memory) and
// one worker process (this file with `--worker`, under node + tsx, so strace/ss can look at it alone), then
// measures sequential (c=1) latencies from one client Connection per configuration:
//   floor      update-with-start of benchFloor (bench/bench-workflows.ts), `waitReady` answered at once
//   floor_done the `complete` update that ends it (a held run's completion)
//   seqN       start + result of probeSeq(N): N sequential no-op regular activities (N=0: an empty workflow)
//   per_wft    (seq8 - seq2) / 6: what one more activity (= one more workflow task) costs
//   slow       how many samples of all took over 1 s
// With `--c50 RUNS` each rep also runs RUNS probeSeq(2) workflows kept 50 in flight: runs/s and the CPU ms
// per run of the dev server and of the worker process (from /proc).
// Repetitions are interleaved: every rep runs every configuration, the order rotating, so a noisy minute on
// a shared machine falls on all of them alike. Reported: median of the reps' medians with the min–max of the
// reps' medians, and the overall min–max of all samples. After the last rep it prints, for each config, the
// server-side gaps of one seq8 history (WorkflowTaskScheduled→Started = matching dispatch, Started→Completed =
// worker + network, ActivityTaskScheduled→Started, ...), which says which side the time is spent on.
//
// Options: PROBE_KEEP=1 keeps the temporary folder (server and worker logs).
//
// What it found (2026-11, Temporal CLI 1.5.1 / server 1.29.1, TS SDK 1.24, a shared 2-core machine): the
// ~50 ms steps were the history service's transfer-queue read rate, `history.transferProcessorMaxPollRPS`
// (default 20 reads/s per shard; the dev server has one shard). Every workflow task (and non-eager activity
// task) reaches matching through that queue, so a chain of workflow tasks settles at one per 50 ms once the
// limiter's burst is spent: the histories show WorkflowTaskScheduled→Started ≈ 40 ms (the rest is the
// worker, ~5 ms). At 1000: `--configs base,pollrps` gave per_wft 53.8 → 7.1 ms, seq8 477 → 71 ms, seq0 49.5 →
// 14.1 ms, floor 32.4 → 18.0 ms, c=50 unchanged. scripts/dev-server.ts sets it. Ruled out: Nagle/delayed ACK
// (strace -f -e trace=setsockopt,connect,accept4: worker, client and server all set TCP_NODELAY), task queue
// partitions alone (part1: per_wft 50 ms like base), the update-with-start polling (floor_done, a
// speculative workflow task that skips the transfer queue, was ~8 ms all along).
// Final check, `--configs base,current --c50 200`: per_wft 49.9 → 6.3 ms, seq8 450 → 93 ms, seq0 50 → 14 ms,
// floor 36 → 13 ms; c=50 runs/s and CPU per run the same within the noise. With 4 partitions and the fast
// queue, about 1 start in 400 took ~2 s (`slow`); with one partition none did (hence both settings).
// Note: the history printed at the end can look fast even for `base` when its server idled just before (the
// rate limiter has a burst); the c=1 series, run back to back, show the steady state.
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import { defineUpdate } from '@temporalio/workflow';
import proto from '@temporalio/proto';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSnapshot } from './bench-proc.js';
import { startDevServer, type DevServer } from '../scripts/dev-server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SELF = fileURLToPath(import.meta.url);

interface ProbeConfig {
  /** Dynamic config over DEV_SERVER_DYNAMIC_CONFIG. */
  dynamicConfig?: Record<string, string | number | boolean>;
  /** Worker.create options (JSON-able) over the bench worker's. */
  worker?: Record<string, unknown>;
  /** Extra env of the worker process. */
  env?: Record<string, string>;
}

const ONE_PARTITION = { 'matching.numTaskqueueReadPartitions': 1, 'matching.numTaskqueueWritePartitions': 1 };
const FOUR_PARTITIONS = { 'matching.numTaskqueueReadPartitions': 4, 'matching.numTaskqueueWritePartitions': 4 };
// The history service reads its transfer queue (workflow and activity tasks on their way to matching) at most
// maxPollRPS times a second per shard (server default 20: one read per 50 ms); the dev server has one shard.
const SERVER_DEFAULTS = { 'history.transferProcessorMaxPollRPS': 20, ...FOUR_PARTITIONS };
const CONFIGS: Record<string, ProbeConfig> = {
  /** DEV_SERVER_DYNAMIC_CONFIG as it is now. */
  current: {},
  /** The server's defaults for what scripts/dev-server.ts tunes (before the fix). */
  base: { dynamicConfig: SERVER_DEFAULTS },
  part1: { dynamicConfig: { ...SERVER_DEFAULTS, ...ONE_PARTITION } },
  noeager: { dynamicConfig: { ...SERVER_DEFAULTS, 'system.enableActivityEagerExecution': false } },
  pollrps: { dynamicConfig: { 'history.transferProcessorMaxPollRPS': 1000, ...FOUR_PARTITIONS } },
  pollrps200: { dynamicConfig: { 'history.transferProcessorMaxPollRPS': 200, ...FOUR_PARTITIONS } },
  pollrps_part1: { dynamicConfig: { 'history.transferProcessorMaxPollRPS': 1000, ...ONE_PARTITION } },
  pollrps_noeager: {
    dynamicConfig: { 'history.transferProcessorMaxPollRPS': 1000, 'system.enableActivityEagerExecution': false },
  },
  // Worker variants, over the current dev-server config.
  nosticky: { worker: { maxCachedWorkflows: 0 } },
  pollers: { worker: { maxConcurrentWorkflowTaskPolls: 2, maxConcurrentActivityTaskPolls: 2 } },
};

// ---------------------------------------------------------------------------------------------- worker side
async function runWorker(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS! });
  const worker = await Worker.create({
    connection,
    taskQueue: process.env.PROBE_TASK_QUEUE!,
    workflowBundle: { codePath: process.env.PROBE_BUNDLE! },
    activities: { noop: async (pad: string) => pad },
    shutdownGraceTime: 2_000,
    maxConcurrentActivityTaskExecutions: 200,
    maxHeartbeatThrottleInterval: '2s',
    ...(JSON.parse(process.env.PROBE_WORKER_OPTIONS ?? '{}') as object),
  });
  console.log(`[probe] worker on ${process.env.PROBE_TASK_QUEUE}`);
  await worker.run();
  await connection.close();
}

// ---------------------------------------------------------------------------------------------- probe side
// Plain JS: it is written under node_modules/.cache, which the bundler does not transpile.
const WORKFLOWS = `export { benchFloor } from ${JSON.stringify(join(ROOT, 'bench/bench-workflows.ts'))};
import { proxyActivities } from '@temporalio/workflow';
const { noop } = proxyActivities({ startToCloseTimeout: '30s' });
export async function probeSeq(n) {
  for (let i = 0; i < n; i++) await noop('step-' + i);
  return n;
}
`;

const readyUpdate = defineUpdate<string>('waitReady');
const completeUpdate = defineUpdate<string>('complete');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const r1 = (x: number) => Math.round(x * 10) / 10;

interface Running {
  name: string;
  server: DevServer;
  worker: ChildProcess;
  client: Client;
  connection: Connection;
  queue: string;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function startConfig(name: string, cfg: ProbeConfig, tmp: string, bundle: string): Promise<Running> {
  const server = await startDevServer({
    headless: true,
    logFile: join(tmp, `${name}-server.log`),
    ...(cfg.dynamicConfig ? { dynamicConfig: cfg.dynamicConfig } : {}),
  });
  const queue = `probe-${name}`;
  const logFile = join(tmp, `${name}-worker.log`);
  const fd = openSync(logFile, 'a');
  const worker = spawn(process.execPath, ['--import', 'tsx', SELF, '--worker'], {
    cwd: ROOT,
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: server.address,
      PROBE_TASK_QUEUE: queue,
      PROBE_BUNDLE: bundle,
      PROBE_WORKER_OPTIONS: JSON.stringify(cfg.worker ?? {}),
      ...cfg.env,
    },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const deadline = Date.now() + 120_000;
  while (!readFileSync(logFile, 'utf8').includes('worker on ')) {
    if (worker.exitCode !== null || Date.now() > deadline)
      throw new Error(`${name} worker did not start: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const connection = await Connection.connect({ address: server.address });
  console.log(`[probe] ${name}: server ${server.address} pid ${server.process.pid}, worker pid ${worker.pid}`);
  return { name, server, worker, client: new Client({ connection }), connection, queue };
}

type Measure = 'floor' | 'floor_done' | 'seq0' | 'seq2' | 'seq8';
const MEASURES: Measure[] = ['floor', 'floor_done', 'seq0', 'seq2', 'seq8'];

let counter = 0;
async function sample(
  run: Running,
  what: 'floor' | 'seq0' | 'seq2' | 'seq8',
): Promise<Partial<Record<Measure, number>>> {
  const id = `probe-${run.name}-${Date.now().toString(36)}-${++counter}`;
  if (what === 'floor') {
    const op = new WithStartWorkflowOperation('benchFloor', {
      workflowId: id,
      taskQueue: run.queue,
      workflowIdConflictPolicy: 'FAIL',
    });
    const t = performance.now();
    await run.client.workflow.executeUpdateWithStart(readyUpdate, { startWorkflowOperation: op });
    const floor = performance.now() - t;
    const handle = await op.workflowHandle();
    const c = performance.now();
    await handle.executeUpdate(completeUpdate);
    return { floor, floor_done: performance.now() - c };
  }
  const n = Number(what.slice(3));
  const t = performance.now();
  await run.client.workflow.execute('probeSeq', { workflowId: id, taskQueue: run.queue, args: [n] });
  return { [what]: performance.now() - t };
}

/** `runs` probeSeq(2) workflows, 50 in flight: runs/s and CPU ms per run of the server and the worker. */
async function throughput(run: Running, runs: number): Promise<Record<string, number>> {
  const roots = { server: { pid: run.server.process.pid!, tree: true }, worker: { pid: run.worker.pid!, tree: true } };
  const before = cpuSnapshot(roots);
  const t = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < runs) {
        next++;
        await run.client.workflow.execute('probeSeq', {
          workflowId: `probe-${run.name}-c50-${Date.now().toString(36)}-${++counter}`,
          taskQueue: run.queue,
          args: [2],
        });
      }
    }),
  );
  const wall = performance.now() - t;
  const after = cpuSnapshot(roots);
  return {
    c50_runs_per_s: (runs / wall) * 1000,
    c50_server_cpu_ms: (after.server! - before.server!) / runs,
    c50_worker_cpu_ms: (after.worker! - before.worker!) / runs,
  };
}

async function historyGaps(run: Running): Promise<string> {
  const id = `probe-${run.name}-history-${++counter}`;
  const handle = await run.client.workflow.start('probeSeq', { workflowId: id, taskQueue: run.queue, args: [8] });
  await handle.result();
  const history = await handle.fetchHistory();
  const events = history.events ?? [];
  const ms = (e: (typeof events)[number]) => {
    const ts = e.eventTime!;
    return Number(ts.seconds ?? 0) * 1000 + (ts.nanos ?? 0) / 1e6;
  };
  const gaps: Record<string, number[]> = {};
  let prev: { type: string; t: number } | null = null;
  for (const e of events) {
    const type = String(proto.temporal.api.enums.v1.EventType[e.eventType ?? 0]).replace('EVENT_TYPE_', '');
    const t = ms(e);
    if (prev) (gaps[`${prev.type}→${type}`] ??= []).push(t - prev.t);
    prev = { type, t };
  }
  const total = ms(events[events.length - 1]!) - ms(events[0]!);
  return (
    `  ${run.name}: seq8 history ${events.length} events, first→last ${r1(total)} ms\n` +
    Object.entries(gaps)
      .map(([k, v]) => `    ${k.padEnd(62)} n=${v.length} median ${r1(median(v))} ms [${v.map(r1).join(', ')}]`)
      .join('\n')
  );
}

async function main(): Promise<void> {
  if (process.argv.includes('--list')) {
    for (const [k, v] of Object.entries(CONFIGS)) console.log(`${k}: ${JSON.stringify(v)}`);
    return;
  }
  const names = (arg('configs') ?? 'base,current').split(',').filter(Boolean);
  for (const n of names) if (!CONFIGS[n]) throw new Error(`unknown config ${n} (--list)`);
  const samples = Number(arg('samples') ?? 30);
  const reps = Number(arg('reps') ?? 3);
  const c50Runs = Number(arg('c50') ?? 0);
  const only = (arg('only') ?? 'floor,seq0,seq2,seq8').split(',') as Array<'floor' | 'seq0' | 'seq2' | 'seq8'>;
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const tmp = mkdtempSync(join(tmpdir(), 'latency-probe-'));
  const cacheDir = join(ROOT, 'node_modules/.cache/latency-probe');
  mkdirSync(cacheDir, { recursive: true });
  const wfFile = join(cacheDir, 'probe-workflows.js');
  writeFileSync(wfFile, WORKFLOWS);
  const { code } = await bundleWorkflowCode({ workflowsPath: wfFile, logger: new DefaultLogger('WARN') });
  const bundle = join(tmp, 'probe-bundle.js');
  writeFileSync(bundle, code);

  const running: Running[] = [];
  try {
    for (const n of names) running.push(await startConfig(n, CONFIGS[n]!, tmp, bundle));
    // Warm-up: every kind a few times per config.
    for (const run of running) for (const w of only) for (let i = 0; i < 3; i++) await sample(run, w);
    // results[config][measure][rep] = samples
    const results: Record<string, Record<string, number[][]>> = {};
    for (let rep = 0; rep < reps; rep++) {
      const order = running.map((_, i) => running[(i + rep) % running.length]!);
      for (const run of order) {
        const byMeasure = (results[run.name] ??= {});
        for (const w of only) {
          for (let i = 0; i < samples; i++) {
            const s = await sample(run, w);
            for (const [k, v] of Object.entries(s)) ((byMeasure[k] ??= [])[rep] ??= []).push(v);
          }
        }
        if (c50Runs > 0) {
          const r = await throughput(run, c50Runs);
          for (const [k, v] of Object.entries(r)) ((byMeasure[k] ??= [])[rep] ??= []).push(v);
        }
        const brief = Object.entries(byMeasure)
          .map(([k, v]) => `${k} ${r1(median(v[rep] ?? [0]))}`)
          .join(', ');
        console.log(`[probe] rep ${rep + 1} ${run.name}: p50 ms ${brief}`);
      }
    }
    console.log(
      `\nc=1 latency, ms: median of ${reps} reps' p50 (min–max of the reps' p50) {min–max of all samples}, ${samples} samples/rep`,
    );
    for (const run of running) {
      const byMeasure = results[run.name]!;
      const cells: string[] = [];
      for (const m of MEASURES) {
        const perRep = byMeasure[m];
        if (!perRep) continue;
        const p50s = perRep.map(median);
        const all = perRep.flat();
        cells.push(
          `${m} ${r1(median(p50s))} (${r1(Math.min(...p50s))}–${r1(Math.max(...p50s))}) {${r1(Math.min(...all))}–${r1(Math.max(...all))}}`,
        );
      }
      const slow = MEASURES.flatMap((m) => byMeasure[m]?.flat() ?? []).filter((x) => x > 1000).length;
      cells.push(`slow ${slow}`);
      for (const m of ['c50_runs_per_s', 'c50_server_cpu_ms', 'c50_worker_cpu_ms']) {
        const perRep = byMeasure[m]?.flat();
        if (perRep) cells.push(`${m} ${r1(median(perRep))} (${r1(Math.min(...perRep))}–${r1(Math.max(...perRep))})`);
      }
      if (byMeasure.seq8 && byMeasure.seq2) {
        const per = byMeasure.seq8.map((s8, i) => (median(s8) - median(byMeasure.seq2![i]!)) / 6);
        cells.push(`per_wft ${r1(median(per))} (${r1(Math.min(...per))}–${r1(Math.max(...per))})`);
      }
      console.log(`  ${run.name.padEnd(10)} ${cells.join('; ')}`);
    }
    console.log('\nserver-side gaps of one seq8 run (event time deltas):');
    for (const run of running) console.log(await historyGaps(run));
  } finally {
    for (const run of running) {
      run.worker.kill('SIGTERM');
      await run.connection.close().catch(() => undefined);
      await run.server.stop().catch(() => undefined);
    }
    if (process.env.PROBE_KEEP === '1') console.log(`[probe] logs kept in ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv.includes('--worker')) await runWorker();
else await main();
