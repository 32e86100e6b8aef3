// Process plumbing for `npm run bench`: worker processes started under plain node with a small preload that
// answers "gc now" over an IPC channel (no worker code changed), CPU time of whole process trees and anonymous
// resident memory from /proc, and the statistics the bench reports.
import type { ProviderCallContext } from '../drivers/providers/contract.js';
import { Client, Connection } from '@temporalio/client';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { loadTenancy } from '../config/tenancy.js';
import { createProviders } from '../drivers/providers/load.js';
import { createDrivers } from '../drivers/registry.js';
import { startDevServer } from '../scripts/dev-server.js';
import { createDatabaseIfMissing, openDatabase } from '../store/db.js';
import { ensureEmbeddedStore, readStoreInfo, stopEmbeddedStore, tsxLoaderUrl } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { bundleWorkflows } from '../worker/bundle.js';

const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** The preload every bench worker gets: on {benchGc: id} over IPC, run a full GC twice and answer. */
const GC_PRELOAD = `
if (typeof process.send === 'function') {
  process.on('message', (m) => {
    if (!m || typeof m.benchGc !== 'number') return;
    const gc = globalThis.gc;
    if (typeof gc === 'function') { gc(); gc(); }
    process.send({ benchGcDone: m.benchGc, gc: typeof gc === 'function' });
  });
}
`;

/** Writes the preload (plain JS) into `dir` and returns its path. */
export function writeGcPreload(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'bench-gc-preload.mjs');
  writeFileSync(file, GC_PRELOAD);
  return file;
}

export interface BenchProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  /** Full GC in the process (it runs with --expose-gc), then its RssAnon in bytes. */
  gcThenRssAnon(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts `node [nodeArgs] --expose-gc --import <preload> <script>` with its output in `logFile`, and waits
 * until the log says "worker on ".
 */
export async function startWorkerProcess(opts: {
  name: string;
  script: string;
  nodeArgs?: string[];
  env: Record<string, string>;
  logFile: string;
  preload: string;
}): Promise<BenchProcess> {
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(
    process.execPath,
    ['--expose-gc', '--import', opts.preload, ...(opts.nodeArgs ?? []), opts.script],
    {
      env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...opts.env },
      stdio: ['ignore', fd, fd, 'ipc'],
    },
  );
  closeSync(fd);
  let exitCode: number | null = null;
  child.once('exit', (code, signal) => (exitCode = code ?? (signal ? 128 : -1)));
  const deadline = Date.now() + 120_000;
  for (;;) {
    const log = readFileSync(opts.logFile, 'utf8');
    if (log.includes('worker on ')) break;
    if (exitCode !== null) throw new Error(`${opts.name} exited with ${exitCode}: ${log.slice(-3000)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${opts.name} did not start within 120 s; see ${opts.logFile}`);
    }
    await sleep(100);
  }
  let nextId = 1;
  const pending = new Map<number, (ok: boolean) => void>();
  child.on('message', (m: { benchGcDone?: number; gc?: boolean }) => {
    if (typeof m?.benchGcDone === 'number') pending.get(m.benchGcDone)?.(m.gc === true);
  });
  return {
    name: opts.name,
    child,
    pid: child.pid!,
    logFile: opts.logFile,
    async gcThenRssAnon() {
      const id = nextId++;
      const ok = await new Promise<boolean>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${opts.name}: no answer to gc within 30 s`)), 30_000);
        pending.set(id, (v) => {
          clearTimeout(timer);
          pending.delete(id);
          resolve(v);
        });
        child.send({ benchGc: id });
      });
      if (!ok) throw new Error(`${opts.name}: global.gc is not exposed`);
      await sleep(200); // let the allocator hand freed pages back
      return memoryOf(child.pid!).rssAnon;
    },
    async stop() {
      if (exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      if (child.connected) child.disconnect(); // the IPC channel would keep node alive after the worker stops
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** RssAnon and VmRSS of one process, in bytes (0 when it is gone). */
export function memoryOf(pid: number): { rssAnon: number; vmRss: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
    return { rssAnon: kb('RssAnon'), vmRss: kb('VmRSS') };
  } catch {
    return { rssAnon: 0, vmRss: 0 };
  }
}

/** Peak VmRSS of one process, sampled every 100 ms while armed. */
export class PeakRss {
  peak = 0;
  private timer: NodeJS.Timeout | null = null;
  constructor(readonly pid: number) {}
  start(): void {
    this.peak = memoryOf(this.pid).vmRss;
    this.timer = setInterval(() => (this.peak = Math.max(this.peak, memoryOf(this.pid).vmRss)), 100);
  }
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return Math.max(this.peak, memoryOf(this.pid).vmRss);
  }
}

interface ProcRow {
  ppid: number;
  /** utime + stime (own threads), ms. */
  own: number;
  /** cutime + cstime (children it has waited for), ms. */
  reaped: number;
}

function procTable(): Map<number, ProcRow> {
  const table = new Map<number, ProcRow>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const tick = (i: number) => (Number(f[i]) * 1000) / CLK_TCK;
      // After "pid (comm) ": state=0 ppid=1 … utime=11 stime=12 cutime=13 cstime=14.
      table.set(Number(entry), { ppid: Number(f[1]), own: tick(11) + tick(12), reaped: tick(13) + tick(14) });
    } catch {
      // gone between readdir and read
    }
  }
  return table;
}

/**
 * CPU time in ms, per named root: `tree` roots count the root and every live descendant, each with the
 * children it has reaped (so a short-lived child such as a postgres backend or a bwrap sandbox is counted once
 * it exits); `self` roots count the process's own threads only.
 */
export function cpuSnapshot(roots: Record<string, { pid: number; tree: boolean }>): Record<string, number> {
  const table = procTable();
  const children = new Map<number, number[]>();
  for (const [pid, row] of table) children.set(row.ppid, [...(children.get(row.ppid) ?? []), pid]);
  const out: Record<string, number> = {};
  for (const [name, { pid, tree }] of Object.entries(roots)) {
    const root = table.get(pid);
    if (!root) {
      out[name] = NaN;
      continue;
    }
    if (!tree) {
      out[name] = root.own;
      continue;
    }
    let total = 0;
    const stack = [pid];
    while (stack.length) {
      const p = stack.pop()!;
      const row = table.get(p);
      if (row) total += row.own + row.reaped;
      stack.push(...(children.get(p) ?? []));
    }
    out[name] = total;
  }
  return out;
}

/** Nearest-rank percentile. */
export function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export const r1 = (x: number) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : NaN);
export const r2 = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : NaN);
export const mb = (bytes: number) => r1(bytes / 1024 / 1024);

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface BenchStack {
  /** The stack's own folder (mode 755); removed by stop(). */
  tmp: string;
  dataDir: string;
  databaseUrl: string;
  temporalAddress: string;
  serverPid: number;
  postgresPid: number;
  taskQueue: string;
  store: Store;
  client: EnvRunClient;
  /** In this process, with the worker's workspace roots. */
  admin: EnvRunAdmin;
  /** The worker process started last. */
  worker: BenchProcess;
  /** Starts another worker process with the same settings (after the last one was killed); it becomes `worker`. */
  startWorker(): Promise<BenchProcess>;
  /** Stops the worker, the client, the store and the server, and removes `tmp` (kept with BENCH_KEEP=1). */
  stop(): Promise<void>;
}

/**
 * What every bench script stands on: `npm run build` (unless BENCH_BUILD=0), a dev server, an embedded
 * PostgreSQL, envrun's real worker from dist/ as its own process (BENCH_PROFILE=<dir>: with a CPU profile),
 * and a runs client and an admin in this process. `workerEnv` is added to the worker's environment and to
 * the admin's deployment rules (ENVRUN_WORKSPACE_ROOTS, say). `prepare` runs on the folder before anything
 * starts (files the workspace roots must hold).
 */
export async function startBenchStack(opts: {
  name: string;
  taskQueue: string;
  log: (line: string) => void;
  workerEnv?: (tmp: string) => Record<string, string>;
  prepare?: (tmp: string) => Promise<void> | void;
}): Promise<BenchStack> {
  const tmp = mkdtempSync(join(tmpdir(), `envrun-${opts.name}-`));
  chmodSync(tmp, 0o755);
  const stoppers: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stoppers.reverse()) await s().catch((err) => opts.log(`[${opts.name}] stop: ${err}`));
    stoppers.length = 0;
    if (process.env.BENCH_KEEP === '1') opts.log(`[${opts.name}] kept ${tmp} (BENCH_KEEP=1)`);
    else rmSync(tmp, { recursive: true, force: true });
  };
  try {
    await opts.prepare?.(tmp);
    if (process.env.BENCH_BUILD !== '0') {
      const built = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
      if (built.status !== 0) throw new Error(`npm run build failed (${built.status})`);
    }
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
    const dataDir = join(tmp, 'data');
    const bundle = await bundleWorkflows(join(tmp, 'workflow-bundle.js'));
    const preload = pathToFileURL(writeGcPreload(tmp)).href;
    const built = existsSync(join(ROOT, 'dist/worker/main.js'));
    const extraEnv = opts.workerEnv?.(tmp) ?? {};
    let started = 0;
    const startWorker = () =>
      startWorkerProcess({
        name: `envrun-worker-${++started}`,
        script: join(ROOT, built ? 'dist/worker/main.js' : 'worker/main.ts'),
        nodeArgs: [
          ...(built ? [] : ['--import', tsxLoaderUrl()]),
          // BENCH_PROFILE=<dir>: the worker's CPU profile (`npx tsx bench/profile-summary.ts <dir>`).
          ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
        ],
        env: {
          TEMPORAL_ADDRESS: server.address,
          DATABASE_URL: url.toString(),
          ENVRUN_TASK_QUEUE: opts.taskQueue,
          ENVRUN_HOST_ID: 'bench-host',
          ENVRUN_DATA_DIR: dataDir,
          ENVRUN_WORKFLOW_BUNDLE: bundle,
          ENVRUN_REAPER_EVERY: 'off',
          ...extraEnv,
        },
        // A log per process: the start is read from it.
        logFile: join(tmp, `worker-${started}.log`),
        preload,
      });
    const connection = await Connection.connect({ address: server.address });
    stoppers.push(() => connection.close());
    const client = new EnvRunClient({ client: new Client({ connection }), taskQueue: opts.taskQueue });
    const store = new Store(database.db);
    const admin = new EnvRunAdmin({
      runs: client,
      store,
      drivers: createDrivers(createProviders({ dataDir })),
      tenancy: loadTenancy({ ...process.env, ...extraEnv }, dataDir),
    });
    const stack: BenchStack = {
      tmp,
      dataDir,
      databaseUrl: url.toString(),
      temporalAddress: server.address,
      serverPid: server.process.pid!,
      postgresPid: readStoreInfo(storeDir)!.pid,
      taskQueue: opts.taskQueue,
      store,
      client,
      admin,
      worker: await startWorker(),
      async startWorker() {
        stack.worker = await startWorker();
        return stack.worker;
      },
      stop,
    };
    // The worker stops first (before the client, the store and the server): whichever is current then.
    stoppers.push(() => stack.worker.stop());
    return stack;
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Merges `summary` into bench/results/latest.json's summary (other scripts write other keys), and
 * replaces the targets whose names start with `targetPrefix` with `targets`. Read, modified and written at
 * once, at the end of a script. False when there is no latest.json (or BENCH_WRITE=0).
 */
export function mergeIntoLatest(
  summary: Record<string, number>,
  targets: Array<{ target: string }> = [],
  targetPrefix?: string,
): string | null {
  const latest = join(ROOT, 'bench/results/latest.json');
  if (!existsSync(latest) || process.env.BENCH_WRITE === '0') return null;
  const result = JSON.parse(readFileSync(latest, 'utf8')) as {
    summary: Record<string, unknown>;
    targets?: Array<{ target: string }>;
  };
  result.summary = { ...result.summary, ...summary };
  if (targetPrefix !== undefined) {
    result.targets = [...(result.targets ?? []).filter((t) => !t.target.startsWith(targetPrefix)), ...targets];
  }
  writeFileSync(latest, JSON.stringify(result, null, 2) + '\n');
  return latest;
}

/** A target as the bench reports it: met (true/false), or null when it was not measured. */
export function benchTarget(name: string, measured: number | undefined, limit: number, kind: '≤' | '≥') {
  const ok = measured !== undefined && Number.isFinite(measured);
  return {
    target: name,
    measured: ok ? measured : null,
    limit,
    pass: !ok ? null : kind === '≤' ? measured <= limit : measured >= limit,
  };
}

/** A provider call's context for a bench that calls a sandbox provider directly (no run, no workflow). */
export function benchCallContext(id: string): ProviderCallContext {
  return {
    companyId: 'bench',
    environmentId: id,
    heartbeatRunId: id,
    leaseId: id,
    agentId: null,
    adapterType: 'process',
    executionWorkspaceId: null,
    issueId: null,
    requestedExpiresAt: null,
    attempt: 1,
  };
}
