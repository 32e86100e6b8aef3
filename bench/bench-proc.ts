// Process plumbing for `npm run bench`: worker processes started under plain node with a small preload that
// answers "gc now" over an IPC channel (no worker code changed), CPU time of whole process trees and anonymous
// resident memory from /proc, and the statistics the bench reports.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, readdirSync, writeFileSync, closeSync } from 'node:fs';
import { join } from 'node:path';

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
