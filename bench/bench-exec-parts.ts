// The measured parts of `npm run bench:exec`, interleaved in each repetition: median of the repetitions'
// values with their min and max (stream latencies also as percentiles pooled over every line).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EnvRunAdmin } from '../client/admin.js';
import type { EnvRunClient } from '../client/runs.js';
import { PeakRss, cpuSnapshot, mb, median, memoryOf, pct, r1, r2, type BenchProcess } from './bench-proc.js';

export interface ExecBenchContext {
  client: EnvRunClient;
  admin: EnvRunAdmin;
  worker: BenchProcess;
  reps: number;
  token: string;
  databaseUrl: string;
  temporalAddress: string;
  serverPid: number;
  postgresPid: number;
  taskQueue: string;
  /** The `envrun` binary (bin/envrun.mjs). */
  cli: string;
  log(line: string): void;
  /** Starts a run on the fake sandbox environment and waits until it is ready; its heartbeatRunId. */
  readyRun(name: string): Promise<string>;
}

export interface ExecTarget {
  target: string;
  measured: number | null;
  limit: number;
  pass: boolean | null;
}

/** exec round trip of `true` before commands were journaled (docs/benchmarks.md), ms. */
export const TRUE_BEFORE_MS = 91.2;
const COMPANY = 'bench';
const C1_LINES = 100;
const C50_LINES = 60;
const LINE_GAP_MS = 40;
const CONCURRENT = 50;
const BIG_BYTES = 100_000_000;

const now = () => performance.now();
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;
const spread = (xs: number[]) => `${r1(median(xs))} (${r1(Math.min(...xs))}–${r1(Math.max(...xs))})`;

/**
 * Wall-clock time in ms with sub-millisecond precision: the monotonic clock, set against Date.now() just
 * after its millisecond ticks. The line writer does the same, so both sides read one clock.
 */
function wallClock(): () => number {
  const d = Date.now();
  while (Date.now() === d);
  const offset = Date.now() - performance.now();
  return () => offset + performance.now();
}

/**
 * The line writer: prints `ready`, waits until file `go` exists, waits `delay` ms more, then prints `n` lines
 * `gap` ms apart, each `<i> <wall-clock ms>` read just before its write. Perl when the host has it (it
 * starts in a few ms: 50 node processes starting at once take the 2 cores the measured path needs), else a
 * node script; both write each line straight to the pipe.
 */
const PERL = '/usr/bin/perl';
const PERL_WRITER = `
use Time::HiRes qw(time sleep);
my ($go, $delay, $n, $gap) = @ARGV;
syswrite(STDOUT, "ready\\n");
sleep(0.005) until -e $go;
sleep($delay / 1000);
for my $i (0 .. $n - 1) {
  syswrite(STDOUT, sprintf("%d %.3f\\n", $i, time * 1000));
  sleep($gap / 1000) if $i < $n - 1;
}
`;
const NODE_WRITER = `
const { existsSync } = require('node:fs');
const [go, delay, n, gap] = [process.argv[1], ...process.argv.slice(2).map(Number)];
const d = Date.now();
while (Date.now() === d);
const offset = Date.now() - performance.now();
let i = 0;
const tick = () => {
  process.stdout.write(i + ' ' + (offset + performance.now()).toFixed(3) + '\\n');
  if (++i < n) setTimeout(tick, gap);
};
process.stdout.write('ready\\n');
const poll = setInterval(() => {
  if (!existsSync(go)) return;
  clearInterval(poll);
  setTimeout(tick, delay);
}, 5);
`;
const lineWriter = (go: string, delay: number, n: number, gap: number): { command: string; args: string[] } => {
  const args = [go, String(delay), String(n), String(gap)];
  return existsSync(PERL)
    ? { command: PERL, args: ['-e', PERL_WRITER, ...args] }
    : { command: process.execPath, args: ['-e', NODE_WRITER, ...args] };
};

/** The round trip of `true`: from the client's exec call to its answer, on a ready run. */
async function trueRoundTrip(ctx: ExecBenchContext, rep: number, n = 30): Promise<number> {
  const id = await ctx.readyRun(`true-${rep}`);
  const times: number[] = [];
  for (let i = 0; i < n + 3; i++) {
    const t = now();
    const res = await ctx.client.exec(COMPANY, id, { command: 'true' });
    if (res.exitCode !== 0) throw new Error(`true: exit ${res.exitCode}`);
    if (i >= 3) times.push(now() - t); // the first few warm the run's workflow and the worker's paths
  }
  await ctx.client.completeRun(COMPANY, id, { status: 'succeeded' });
  return pct(times, 50);
}

/**
 * Follows a command's journal through the store (LISTEN/NOTIFY) and gives, per line, the time from its
 * write to the event carrying it here. Lines may be split across chunks; several may share one. `ready`
 * when the writer's first line (`ready`, not measured) is here.
 */
async function followLines(
  ctx: ExecBenchContext,
  run: string,
  commandId: string,
  wall: () => number,
  expected: number,
  ready: () => void,
): Promise<number[]> {
  const latencies: number[] = [];
  let partial = '';
  for await (const e of ctx.admin.streamCommand(COMPANY, run, commandId)) {
    if (e.type === 'output') {
      const t = wall();
      const lines = (partial + e.data.toString('utf8')).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (line === 'ready') ready();
        else latencies.push(t - Number(line.split(' ')[1]));
      }
    } else if (e.type === 'end') {
      const s = e.summary;
      if (s.status !== 'exited' || s.exitCode !== 0) {
        throw new Error(`line writer ${commandId}: ${s.status} exit ${s.exitCode} ${s.error ?? ''}`);
      }
    }
  }
  if (latencies.length !== expected || latencies.some((x) => !Number.isFinite(x))) {
    throw new Error(`line writer ${commandId}: ${latencies.length} lines read, ${expected} written`);
  }
  return latencies;
}

/**
 * One line writer per run, started detached, with a reader each. Once every reader has its writer's `ready`
 * (all commands run and stream), the writers are let go together, staggered over one gap so the lines of
 * the concurrent commands spread evenly, as unsynchronized agents' would. Every line's latency; the time
 * from the first exec call to the last `ready`; the CPU time spent from the go to the last line.
 */
async function streamLatency(
  ctx: ExecBenchContext,
  runs: string[],
  label: string,
  lines: number,
): Promise<{ latencies: number[]; startMs: number; cpu: Record<string, number> }> {
  const wall = wallClock();
  const ids = runs.map((_, k) => `${ctx.token}-${label}-${k}`);
  const dir = mkdtempSync(join(tmpdir(), 'bench-exec-go-'));
  const go = join(dir, 'go');
  try {
    let waiting = runs.length;
    let allReady: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (allReady = resolve));
    // Readers first: each waits for its command's row, then follows it.
    const readers = runs.map((run, k) =>
      followLines(ctx, run, ids[k]!, wall, lines, () => {
        if (--waiting === 0) allReady();
      }),
    );
    const failed = Promise.race(readers).then(() => undefined);
    for (const r of readers) r.catch(() => undefined); // each is awaited below
    const t0 = now();
    await Promise.all(
      runs.map((run, k) =>
        ctx.client.exec(COMPANY, run, {
          ...lineWriter(go, (k * LINE_GAP_MS) / runs.length, lines, LINE_GAP_MS),
          commandId: ids[k]!,
          wait: false,
          timeoutMs: 300_000,
        }),
      ),
    );
    await Promise.race([ready, failed]); // a reader that fails before every writer is ready throws here
    const startMs = now() - t0;
    const cpu0 = cpuNow(ctx);
    writeFileSync(go, '');
    const latencies = (await Promise.all(readers)).flat();
    return { latencies, startMs, cpu: cpuSince(ctx, cpu0) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `envrun run exec … -- sh -c 'head -c N /dev/zero'`: the CLI's stdout bytes, exit code and wall time. */
function cliExec(ctx: ExecBenchContext, run: string, commandId: string): Promise<{ bytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const t = now();
    const child = spawn(
      process.execPath,
      [
        // BENCH_PROFILE=<dir>: the CLI's CPU profile too, in <dir>/cli.
        ...(process.env.BENCH_PROFILE
          ? ['--cpu-prof', `--cpu-prof-dir=${join(process.env.BENCH_PROFILE, 'cli')}`]
          : []),
        ctx.cli,
        'run',
        'exec',
        '--company',
        COMPANY,
        '--run',
        run,
        '--command-id',
        commandId,
        '--',
        'sh',
        '-c',
        `head -c ${BIG_BYTES} /dev/zero`,
      ],
      {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/tmp',
          TEMPORAL_ADDRESS: ctx.temporalAddress,
          DATABASE_URL: ctx.databaseUrl,
          ENVRUN_TASK_QUEUE: ctx.taskQueue,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (bytes += d.length));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = now() - t;
      if (code !== 0) reject(new Error(`envrun run exec exited ${code}: ${stderr}`));
      else resolve({ bytes, ms });
    });
  });
}

/** 100 MB of output through one command to the CLI: MB/s and the worker's VmRSS growth (peak − before). */
async function bigOutput(
  ctx: ExecBenchContext,
  rep: number,
): Promise<{ mbPerS: number; rssGrowthMb: number; seconds: number; cpu: Record<string, number> }> {
  const run = await ctx.readyRun(`big-${rep}`);
  await ctx.worker.gcThenRssAnon(); // a settled worker: what grows below is this command's doing
  const before = memoryOf(ctx.worker.pid).vmRss;
  const peak = new PeakRss(ctx.worker.pid);
  peak.start();
  const cpu0 = cpuNow(ctx);
  const commandId = `${ctx.token}-big-${rep}`;
  let res: { bytes: number; ms: number };
  let peakRss: number;
  try {
    res = await cliExec(ctx, run, commandId);
  } finally {
    peakRss = peak.stop();
  }
  const cpu = cpuSince(ctx, cpu0);
  if (res.bytes !== BIG_BYTES) throw new Error(`100 MB part: ${res.bytes} bytes read, ${BIG_BYTES} written`);
  await ctx.client.completeRun(COMPANY, run, { status: 'succeeded' });
  const seconds = res.ms / 1000;
  return { mbPerS: BIG_BYTES / 1e6 / seconds, rssGrowthMb: mb(peakRss - before), seconds, cpu };
}

const PARTS = ['true', 'c1', 'c50', 'big'] as const;
type Part = (typeof PARTS)[number];

/** `BENCH_EXEC_PARTS=c1,big`: only those parts (all by default). */
function selectedParts(): Set<Part> {
  const given = (process.env.BENCH_EXEC_PARTS ?? '').split(',').filter(Boolean);
  for (const p of given) {
    if (!(PARTS as readonly string[]).includes(p))
      throw new Error(`BENCH_EXEC_PARTS: ${p} is not one of ${PARTS.join(', ')}`);
  }
  return new Set(given.length ? (given as Part[]) : PARTS);
}

/**
 * CPU time (ms): the worker's tree (with the commands it runs), PostgreSQL's, the dev server's, this process
 * (the readers) and the children it has reaped (the CLI).
 */
function cpuNow(ctx: ExecBenchContext): Record<string, number> {
  const c = cpuSnapshot({
    worker: { pid: ctx.worker.pid, tree: true },
    postgres: { pid: ctx.postgresPid, tree: true },
    server: { pid: ctx.serverPid, tree: true },
  });
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const tick = 1000 / CLK_TCK;
  return { ...c, bench: (Number(f[11]) + Number(f[12])) * tick, cli: (Number(f[13]) + Number(f[14])) * tick };
}
const cpuSince = (ctx: ExecBenchContext, before: Record<string, number>) => {
  const after = cpuNow(ctx);
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k]!]));
};
const cpuText = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`)
    .join(', ');
const loadAvg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

export async function execParts(
  ctx: ExecBenchContext,
): Promise<{ summary: Record<string, number>; targets: ExecTarget[] }> {
  const parts = selectedParts();
  const trueP50: number[] = [];
  const c1: number[][] = [];
  const c50: number[][] = [];
  const c50Start: number[] = [];
  const c50Cpu: Array<Record<string, number>> = [];
  const big: Array<{ mbPerS: number; rssGrowthMb: number; seconds: number; cpu: Record<string, number> }> = [];
  ctx.log(`[bench:exec] line writer: ${existsSync(PERL) ? PERL : process.execPath}; load average ${loadAvg()}`);
  // The concurrent commands' runs: started once, each holds one command per repetition.
  const t = now();
  const runs50 = parts.has('c50')
    ? await Promise.all(Array.from({ length: CONCURRENT }, (_, k) => ctx.readyRun(`c50-${k}`)))
    : [];
  if (runs50.length) ctx.log(`[bench:exec] ${CONCURRENT} runs ready in ${r1(now() - t)} ms`);
  for (let rep = 0; rep < ctx.reps; rep++) {
    const at = `[bench:exec] rep ${rep + 1}/${ctx.reps}:`;
    if (parts.has('true')) {
      trueP50.push(await trueRoundTrip(ctx, rep));
      ctx.log(`${at} true round trip p50 ${r1(trueP50.at(-1)!)} ms`);
    }
    if (parts.has('c1')) {
      const run1 = await ctx.readyRun(`c1-${rep}`);
      const one = await streamLatency(ctx, [run1], `c1-${rep}`, C1_LINES);
      await ctx.client.completeRun(COMPANY, run1, { status: 'succeeded' });
      c1.push(one.latencies);
      ctx.log(
        `${at} stream latency c=1: p50 ${r1(pct(one.latencies, 50))} ms, p99 ${r1(pct(one.latencies, 99))} ms, max ${r1(Math.max(...one.latencies))} ms (${one.latencies.length} lines)`,
      );
    }
    if (parts.has('c50')) {
      const many = await streamLatency(ctx, runs50, `c50-${rep}`, C50_LINES);
      c50Cpu.push(many.cpu);
      c50.push(many.latencies);
      c50Start.push(many.startMs);
      ctx.log(
        `${at} stream latency c=${CONCURRENT}: p50 ${r1(pct(many.latencies, 50))} ms, p99 ${r1(pct(many.latencies, 99))} ms, max ${r1(Math.max(...many.latencies))} ms (${many.latencies.length} lines; ${CONCURRENT} execs started and streaming in ${r1(many.startMs)} ms; cpu s from the go: ${cpuText(c50Cpu.at(-1)!)}; load ${loadAvg()})`,
      );
    }
    if (parts.has('big')) {
      big.push(await bigOutput(ctx, rep));
      const b = big.at(-1)!;
      ctx.log(
        `${at} 100 MB: ${r1(b.seconds)} s, ${r1(b.mbPerS)} MB/s, worker VmRSS growth ${r1(b.rssGrowthMb)} MB (cpu s: ${cpuText(b.cpu)}; load ${loadAvg()})`,
      );
    }
  }
  await Promise.all(runs50.map((run) => ctx.client.completeRun(COMPANY, run, { status: 'succeeded' })));

  const c1All = c1.flat();
  const c50All = c50.flat();
  const summary: Record<string, number> = {};
  const n = ctx.reps;
  ctx.log(`\n[bench:exec] ${n} repetitions; per repetition: median (min–max)`);
  if (parts.has('true')) {
    summary.exec_true_round_trip_p50_ms = r1(median(trueP50));
    summary.exec_true_vs_before = r2(median(trueP50) / TRUE_BEFORE_MS);
    ctx.log(
      `  exec true round trip p50: ${spread(trueP50)} ms; ${summary.exec_true_vs_before}× the ${TRUE_BEFORE_MS} ms before`,
    );
  }
  if (parts.has('c1')) {
    summary.exec_stream_latency_p50_ms = r1(pct(c1All, 50));
    summary.exec_stream_latency_p99_ms = r1(pct(c1All, 99));
    ctx.log(
      `  stream latency c=1, p50 per repetition: ${spread(c1.map((xs) => pct(xs, 50)))} ms; p99: ${spread(c1.map((xs) => pct(xs, 99)))} ms`,
    );
    ctx.log(
      `  stream latency c=1 pooled (${c1All.length} lines): p50 ${summary.exec_stream_latency_p50_ms} ms, p99 ${summary.exec_stream_latency_p99_ms} ms`,
    );
  }
  if (parts.has('c50')) {
    summary.exec_stream_latency_c50_p50_ms = r1(pct(c50All, 50));
    summary.exec_stream_latency_c50_p99_ms = r1(pct(c50All, 99));
    ctx.log(
      `  stream latency c=${CONCURRENT}, p50 per repetition: ${spread(c50.map((xs) => pct(xs, 50)))} ms; p99: ${spread(c50.map((xs) => pct(xs, 99)))} ms`,
    );
    ctx.log(
      `  stream latency c=${CONCURRENT} pooled (${c50All.length} lines): p50 ${summary.exec_stream_latency_c50_p50_ms} ms, p99 ${summary.exec_stream_latency_c50_p99_ms} ms; ${CONCURRENT} detached execs started and streaming in ${spread(c50Start)} ms`,
    );
    const perLine = (k: string) => spread(c50Cpu.map((c) => c[k]! / (CONCURRENT * C50_LINES)));
    ctx.log(
      `  c=${CONCURRENT} CPU ms per line, from the go: worker (with the writers) ${perLine('worker')}, postgres ${perLine('postgres')}, readers (this process) ${perLine('bench')}, server ${perLine('server')}`,
    );
  }
  if (parts.has('big')) {
    summary.exec_100mb_mb_per_s = r1(median(big.map((b) => b.mbPerS)));
    summary.exec_100mb_rss_growth_mb = r1(median(big.map((b) => b.rssGrowthMb)));
    ctx.log(
      `  100 MB to the CLI: ${spread(big.map((b) => b.mbPerS))} MB/s; worker VmRSS growth ${spread(big.map((b) => b.rssGrowthMb))} MB`,
    );
    const cpu = (k: string) => spread(big.map((b) => b.cpu[k]! / 1000));
    ctx.log(
      `  100 MB CPU s: worker (with the command) ${cpu('worker')}, postgres ${cpu('postgres')}, CLI ${cpu('cli')}`,
    );
  }

  const target = (name: string, measured: number | undefined, limit: number, kind: '≤' | '≥'): ExecTarget => ({
    target: name,
    measured: measured !== undefined && Number.isFinite(measured) ? measured : null,
    limit,
    pass:
      measured === undefined || !Number.isFinite(measured)
        ? null
        : kind === '≤'
          ? measured <= limit
          : measured >= limit,
  });
  const targets = [
    target('exec stream latency c=1 p50 ≤ 30 ms', summary.exec_stream_latency_p50_ms, 30, '≤'),
    target('exec stream latency c=1 p99 ≤ 100 ms', summary.exec_stream_latency_p99_ms, 100, '≤'),
    target(`exec stream latency c=${CONCURRENT} p50 ≤ 30 ms`, summary.exec_stream_latency_c50_p50_ms, 30, '≤'),
    target(`exec stream latency c=${CONCURRENT} p99 ≤ 100 ms`, summary.exec_stream_latency_c50_p99_ms, 100, '≤'),
    target('exec 100 MB to the CLI ≥ 20 MB/s', summary.exec_100mb_mb_per_s, 20, '≥'),
    target('exec 100 MB: worker RSS growth ≤ 20 MB', summary.exec_100mb_rss_growth_mb, 20, '≤'),
    target(`exec true round trip ≤ 1.2× before (${TRUE_BEFORE_MS} ms; ratio)`, summary.exec_true_vs_before, 1.2, '≤'),
  ];
  ctx.log('\n| figure | measured | target | met |\n| --- | --- | --- | --- |');
  for (const t of targets) {
    ctx.log(
      `| ${t.target} | ${t.measured ?? '–'} | ${t.limit} | ${t.pass === null ? 'not measured' : t.pass ? 'yes' : 'NO'} |`,
    );
  }
  return { summary, targets: targets.filter((t) => t.pass !== null) };
}
