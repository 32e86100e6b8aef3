// Measures the envrun worker's memory: the real worker (`node dist/worker/main.js`, `npm run build` first) in
// its own process, on a headless dev server and the embedded store of a scratch data folder, with the fake
// provider. For each variant and rep (variants interleaved within a rep, so drift on a noisy machine hits
// them all) it reads the worker's RssAnon from /proc/<pid>/status after a full GC (the worker is started with
// --expose-gc and a preload that runs gc() on an IPC message): idle, then with 1 / 100 / 1,000 runs held at
// ready; then the latency of completing evicted (uncached, oldest) and cached (newest) held runs one at a
// time. Prints the median and min–max over the reps.
//
//   npx tsx bench/measure-worker-memory.ts [--reps 3] [--held 1,100,1000] [--complete 30]
//       [--variant 'label:KEY=VALUE;KEY=VALUE'] …      (default variant: "default", the worker as configured)
//       [--trace-modules]                              (list the packages the idle worker loaded, by size)
//   npx tsx bench/measure-worker-memory.ts --dev-server [--reps 3] [--runs 50] [--entry W] [--bundle B]
//       the dev server's settings instead: per setting (in memory / SQLite file, search-attribute cache
//       refresh on read on / off, SQLite pragmas) a fresh dev server and worker, then `--runs` sequential
//       start→ready runs (after 5 warm-up runs), settings interleaved within each rep; prints the p50.
//
// In a variant, NODE_ARGS='--max-old-space-size=128 …' are node flags for the worker and ENTRY=worker/main.ts
// runs the sources through tsx instead of dist/worker/main.js; every other KEY=VALUE is the worker's
// environment (ENVRUN_MAX_CACHED_WORKFLOWS=100, ENVRUN_WORKFLOW_BUNDLE=bundle: a prebuilt bundle).
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { createProviders } from '../drivers/providers/load.js';
import { createDrivers } from '../drivers/registry.js';
import { openDatabase, resolveDatabaseUrl } from '../store/db.js';
import { ensureEmbeddedStore, stopEmbeddedStore, tsxLoaderUrl } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { startDevServer, type DevServerOptions } from '../scripts/dev-server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// The compiled worker: dist/worker/main.js from the sources, ../worker/main.js when this script is itself compiled.
const DEFAULT_ENTRY = fileURLToPath(
  new URL(import.meta.url.endsWith('.js') ? '../worker/main.js' : '../dist/worker/main.js', import.meta.url),
);
const { values } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    held: { type: 'string', default: '1,100,1000' },
    complete: { type: 'string', default: '30' },
    variant: { type: 'string', multiple: true },
    'trace-modules': { type: 'boolean', default: false },
    'dev-server': { type: 'boolean', default: false },
    runs: { type: 'string', default: '50' },
    entry: { type: 'string', default: DEFAULT_ENTRY },
    bundle: { type: 'string' },
  },
});
const REPS = Number(values.reps);
const HELD = values.held.split(',').filter(Boolean).map(Number);
const COMPLETE = Number(values.complete);

interface Variant {
  label: string;
  env: Record<string, string>;
  nodeArgs: string[];
  entry: string;
}

function parseVariant(text: string): Variant {
  const colon = text.indexOf(':');
  const label = colon < 0 ? text : text.slice(0, colon);
  const env: Record<string, string> = {};
  let nodeArgs: string[] = [];
  let entry = DEFAULT_ENTRY;
  for (const pair of colon < 0 ? [] : text.slice(colon + 1).split(';')) {
    if (!pair.trim()) continue;
    const eq = pair.indexOf('=');
    const key = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (key === 'NODE_ARGS') nodeArgs = value.split(' ').filter(Boolean);
    else if (key === 'ENTRY') entry = value;
    else env[key] = value;
  }
  return { label, env, nodeArgs, entry };
}

const VARIANTS = (values.variant?.length ? values.variant : ['default']).map(parseVariant);

// Runs gc() in the worker on request, in every thread (the preload runs in the workflow thread too: its own V8
// heap), and answers with the process's /proc status; the IPC channel keeps nothing alive.
const GC_PRELOAD = `
import { readFileSync } from 'node:fs';
import { BroadcastChannel, isMainThread } from 'node:worker_threads';
const channel = new BroadcastChannel('envrun-measure-gc');
channel.unref();
const collect = () => { globalThis.gc?.(); globalThis.gc?.(); };
if (!isMainThread) channel.onmessage = collect;
else if (process.send) {
  process.channel?.unref();
  process.on('message', (m) => {
    if (m === 'gc') {
      channel.postMessage('gc');
      collect();
      setTimeout(() => process.send({ status: readFileSync('/proc/self/status', 'utf8') }), 500);
    } else if (m === 'modules') {
      process.send({ modules: Object.keys(globalThis.__envrunModuleTrace ?? {}) });
    }
  });
}
`;
// With --trace-modules: every module the worker resolves (ESM hook) or requires (CommonJS), by path.
const TRACE_PRELOAD = `
import { register, createRequire } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const seen = (globalThis.__envrunModuleTrace = {});
const { port1, port2 } = new MessageChannel();
port1.on('message', (url) => { seen[url] = true; });
port1.unref();
register('data:text/javascript,' + encodeURIComponent(
  'let port; export function initialize(d) { port = d.port; }' +
  'export async function resolve(s, c, next) { const r = await next(s, c); port.postMessage(r.url); return r; }'
), import.meta.url, { data: { port: port2 }, transferList: [port2] });
const Module = createRequire(import.meta.url)('node:module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  try { const f = Module._resolveFilename(request, parent, isMain); if (f.startsWith('/')) seen['file://' + f] = true; } catch {}
  return load.apply(this, arguments);
};
`;

const kb = (status: string, field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
const mb = (kbytes: number) => Math.round(kbytes / 102.4) / 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};
const round1 = (x: number) => Math.round(x * 10) / 10;

interface WorkerProcess {
  child: ChildProcess;
  startMs: number;
  status(): Promise<string>;
  modules(): Promise<string[]>;
  stop(): Promise<void>;
}

async function spawnWorker(variant: Variant, env: Record<string, string>, logFile: string): Promise<WorkerProcess> {
  const entry = resolve(ROOT, variant.entry);
  const args = [
    '--expose-gc',
    '--import',
    join(scratch, 'gc-preload.mjs'),
    ...(values['trace-modules'] ? ['--import', join(scratch, 'trace-preload.mjs')] : []),
    ...variant.nodeArgs,
    ...(entry.endsWith('.ts') ? ['--import', tsxLoaderUrl()] : []),
    entry,
  ];
  const started = performance.now();
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let out = '';
  const onData = (c: Buffer) => {
    out = (out + c.toString()).slice(-65_536);
    writeFileSync(logFile, c, { flag: 'a' });
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  await new Promise<void>((resolveReady, reject) => {
    const timer = setInterval(() => out.includes('worker on ') && (clearInterval(timer), resolveReady()), 20);
    child.once('exit', (code) => {
      clearInterval(timer);
      reject(new Error(`worker exited with ${code}: ${out.slice(-2000)}`));
    });
  });
  const startMs = performance.now() - started;
  const ask = <T>(message: string, key: string) =>
    new Promise<T>((resolveAnswer) => {
      const on = (m: Record<string, unknown>) => {
        if (key in m) {
          child.off('message', on);
          resolveAnswer(m[key] as T);
        }
      };
      child.on('message', on);
      child.send(message);
    });
  return {
    child,
    startMs,
    status: () => ask<string>('gc', 'status'),
    modules: () => ask<string[]>('modules', 'modules'),
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs `fn` over `items`, `width` at a time. */
async function inBatches<T>(items: T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

interface RepResult {
  startMs: number;
  rssAnonMb: Record<string, number>; // 'idle', '1', '100', …
  vmRssMb: Record<string, number>;
  evictedCompleteMs: number[];
  cachedCompleteMs: number[];
  secondsToReady: number;
}

/** The workflows bundled from the sources (imported only then: the worker's modules stay out of this process). */
async function bundleFromSources(): Promise<string> {
  const { bundleWorkflows } = await import('../worker/bundle.js');
  return bundleWorkflows(join(scratch, 'workflow-bundle.js'));
}

const scratch = mkdtempSync(join(tmpdir(), 'envrun-memory-'));

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  chmodSync(scratch, 0o755); // the embedded server runs as an unprivileged user when we are root
  writeFileSync(join(scratch, 'gc-preload.mjs'), GC_PRELOAD);
  writeFileSync(join(scratch, 'trace-preload.mjs'), TRACE_PRELOAD);
  const dataDir = join(scratch, 'data');
  mkdirSync(dataDir, { recursive: true });
  const server = await startDevServer({ headless: true, logFile: join(scratch, 'temporal.log') });
  await ensureEmbeddedStore(dataDir);
  const database = await openDatabase(await resolveDatabaseUrl({ dataDir }), 10);
  const store = new Store(database.db);
  const bundle = VARIANTS.some((v) => v.env.ENVRUN_WORKFLOW_BUNDLE === 'bundle') ? await bundleFromSources() : null;
  const connection = await Connection.connect({ address: server.address });
  const temporal = new Client({ connection });
  const drivers = createDrivers(createProviders({ dataDir }));
  const cwd = mkdtempSync(join(tmpdir(), 'envrun-memory-ws-'));
  const results = new Map<string, RepResult[]>(VARIANTS.map((v) => [v.label, []]));
  let environmentId: string | null = null;
  console.log(`scratch ${scratch}; dev server ${server.address}; ${REPS} reps of ${VARIANTS.length} variant(s)`);

  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const variant of VARIANTS) {
        const taskQueue = `mem-${rep}-${variant.label.replace(/[^A-Za-z0-9]/g, '_')}`;
        const env = {
          TEMPORAL_ADDRESS: server.address,
          ENVRUN_TASK_QUEUE: taskQueue,
          ENVRUN_DATA_DIR: dataDir,
          ENVRUN_REAPER_EVERY: 'off',
          ENVRUN_LOG_LEVEL: 'INFO',
          ENVRUN_HOST_ID: 'memory-host',
          ...variant.env,
          ...(variant.env.ENVRUN_WORKFLOW_BUNDLE === 'bundle' ? { ENVRUN_WORKFLOW_BUNDLE: bundle! } : {}),
        };
        const worker = await spawnWorker(variant, env, join(scratch, `${taskQueue}.log`));
        const client = new EnvRunClient({ client: temporal, taskQueue, runDefaults: { awaitRetryMs: 0 } });
        const admin = new EnvRunAdmin({ runs: client, store, drivers });
        environmentId ??= (
          await admin.createEnvironment({
            companyId: 'mem',
            name: 'fake',
            driver: 'sandbox',
            config: { provider: 'fake' },
          })
        ).id;
        const result: RepResult = {
          startMs: Math.round(worker.startMs),
          rssAnonMb: {},
          vmRssMb: {},
          evictedCompleteMs: [],
          cachedCompleteMs: [],
          secondsToReady: 0,
        };
        const sample = async (key: string) => {
          const status = await worker.status();
          result.rssAnonMb[key] = mb(kb(status, 'RssAnon'));
          result.vmRssMb[key] = mb(kb(status, 'VmRSS'));
        };
        try {
          await sleep(2000);
          await sample('idle');
          if (values['trace-modules'] && rep === 0) reportModules(variant.label, await worker.modules());
          const held: string[] = [];
          const t = performance.now();
          for (const target of HELD) {
            const ids = Array.from({ length: target - held.length }, (_, i) => `${taskQueue}-${held.length + i}`);
            await inBatches(ids, 50, async (id) => {
              await client.startRunAndWaitReady({
                companyId: 'mem',
                heartbeatRunId: id,
                environmentId: environmentId!,
                workspace: { baseCwd: cwd, cwd },
              });
            });
            held.push(...ids);
            await sleep(1000);
            await sample(String(target));
          }
          result.secondsToReady = round1((performance.now() - t) / 1000);
          // Oldest first: past the cache size these were evicted, and completing one replays it.
          const complete = async (id: string, into: number[]) => {
            const t0 = performance.now();
            await client.completeRun('mem', id, { status: 'succeeded' });
            into.push(performance.now() - t0);
          };
          const oldest = held.splice(0, Math.min(COMPLETE, Math.floor(held.length / 2)));
          for (const id of oldest) await complete(id, result.evictedCompleteMs);
          const newest = held.splice(Math.max(0, held.length - oldest.length));
          for (const id of newest.reverse()) await complete(id, result.cachedCompleteMs);
          await inBatches(held, 50, (id) => client.completeRun('mem', id, { status: 'succeeded' }));
        } finally {
          await worker.stop();
        }
        results.get(variant.label)!.push(result);
        const row = HELD.map((h) => `${h}=${result.rssAnonMb[h]}`).join(' ');
        console.log(
          `rep ${rep + 1} ${variant.label}: start ${result.startMs} ms; RssAnon idle=${result.rssAnonMb.idle} ${row} MB;` +
            ` complete p50 evicted ${round1(median(result.evictedCompleteMs))} ms, cached ${round1(median(result.cachedCompleteMs))} ms;` +
            ` ${result.secondsToReady} s to ready`,
        );
      }
    }
  } finally {
    await connection.close();
    await database.close();
    await server.stop();
    await stopEmbeddedStore(dataDir);
  }

  const fmt = (xs: number[]) => `${round1(median(xs))} (${round1(Math.min(...xs))}–${round1(Math.max(...xs))})`;
  console.log(`\nRssAnon MB after GC, median (min–max) of ${REPS} reps; VmRSS idle; complete-update p50 ms`);
  const cols = ['idle', ...HELD.map(String)];
  console.log(
    `| variant | start ms | ${cols.map((c) => (c === 'idle' ? 'idle' : `${c} held`)).join(' | ')} | VmRSS idle | complete evicted p50 | complete cached p50 |`,
  );
  console.log(`| --- | --- | ${cols.map(() => '---').join(' | ')} | --- | --- | --- |`);
  for (const variant of VARIANTS) {
    const reps = results.get(variant.label)!;
    console.log(
      `| ${variant.label} | ${fmt(reps.map((r) => r.startMs))} | ${cols.map((c) => fmt(reps.map((r) => r.rssAnonMb[c]!))).join(' | ')} |` +
        ` ${fmt(reps.map((r) => r.vmRssMb.idle!))} | ${fmt(reps.map((r) => median(r.evictedCompleteMs)))} | ${fmt(reps.map((r) => median(r.cachedCompleteMs)))} |`,
    );
  }
  rmSync(scratch, { recursive: true, force: true });
  rmSync(cwd, { recursive: true, force: true });
}

/** The packages (and envrun's own files) the idle worker loaded, largest first by source size. */
function reportModules(label: string, urls: string[]): void {
  const byPackage = new Map<string, { files: number; bytes: number }>();
  for (const url of urls) {
    if (!url.startsWith('file://')) continue;
    const path = fileURLToPath(url);
    const at = path.lastIndexOf('node_modules/');
    const parts = path.slice(at + 'node_modules/'.length).split('/');
    const key =
      at >= 0
        ? parts.slice(0, parts[0]!.startsWith('@') ? 2 : 1).join('/')
        : `(envrun) ${path.startsWith(ROOT) ? path.slice(ROOT.length).split('/').slice(0, 2).join('/') : path}`;
    const entry = byPackage.get(key) ?? { files: 0, bytes: 0 };
    entry.files += 1;
    try {
      entry.bytes += statSync(path).size;
    } catch {
      // a directory or a vanished file
    }
    byPackage.set(key, entry);
  }
  const rows = [...byPackage.entries()].sort((a, b) => b[1].bytes - a[1].bytes);
  console.log(`\nmodules loaded by the idle worker (${label}): ${urls.length} files`);
  for (const [name, { files, bytes }] of rows)
    console.log(`  ${name.padEnd(40)} ${String(files).padStart(5)} files ${(bytes / 1024).toFixed(0).padStart(7)} KB`);
}

interface ServerSetting {
  label: string;
  options: Pick<DevServerOptions, 'dynamicConfig' | 'sqlitePragmas'> & { file: boolean };
}

const FORCE = 'system.forceSearchAttributesCacheRefreshOnRead';
const SERVER_SETTINGS: ServerSetting[] = [
  { label: 'memory, refresh on read (CLI default)', options: { file: false, dynamicConfig: { [FORCE]: true } } },
  { label: 'memory, no refresh on read', options: { file: false, dynamicConfig: { [FORCE]: false } } },
  { label: 'file, refresh on read (CLI default)', options: { file: true, dynamicConfig: { [FORCE]: true } } },
  { label: 'file, no refresh on read', options: { file: true, dynamicConfig: { [FORCE]: false } } },
  {
    label: 'file, no refresh, journal_mode=wal synchronous=normal',
    options: {
      file: true,
      dynamicConfig: { [FORCE]: false },
      sqlitePragmas: { journal_mode: 'wal', synchronous: 'normal' },
    },
  },
];

/** start→ready p50 of sequential runs per dev server setting, each on a fresh server and worker. */
async function devServerSettings(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  chmodSync(scratch, 0o755);
  writeFileSync(join(scratch, 'gc-preload.mjs'), GC_PRELOAD);
  const dataDir = join(scratch, 'data');
  mkdirSync(dataDir, { recursive: true });
  await ensureEmbeddedStore(dataDir);
  const database = await openDatabase(await resolveDatabaseUrl({ dataDir }), 5);
  const store = new Store(database.db);
  const bundle = values.bundle ?? (await bundleFromSources());
  const drivers = createDrivers(createProviders({ dataDir }));
  const cwd = mkdtempSync(join(tmpdir(), 'envrun-memory-ws-'));
  const runs = Number(values.runs);
  const p50s = new Map<string, number[]>(SERVER_SETTINGS.map((s) => [s.label, []]));
  let environmentId: string | null = null;
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const [i, setting] of SERVER_SETTINGS.entries()) {
        const dbFilename = setting.options.file ? join(scratch, `temporal-${rep}-${i}.db`) : undefined;
        const server = await startDevServer({
          headless: true,
          logFile: join(scratch, 'temporal.log'),
          dbFilename,
          dynamicConfig: setting.options.dynamicConfig,
          sqlitePragmas: setting.options.sqlitePragmas,
        });
        const taskQueue = `srv-${rep}-${i}`;
        const worker = await spawnWorker(
          { label: setting.label, env: {}, nodeArgs: [], entry: values.entry },
          {
            TEMPORAL_ADDRESS: server.address,
            ENVRUN_TASK_QUEUE: taskQueue,
            ENVRUN_DATA_DIR: dataDir,
            ENVRUN_REAPER_EVERY: 'off',
            ENVRUN_WORKFLOW_BUNDLE: bundle,
            ENVRUN_HOST_ID: 'memory-host',
          },
          join(scratch, `${taskQueue}.log`),
        );
        const connection = await Connection.connect({ address: server.address });
        try {
          const client = new EnvRunClient({
            client: new Client({ connection }),
            taskQueue,
            runDefaults: { awaitRetryMs: 0 },
          });
          const admin = new EnvRunAdmin({ runs: client, store, drivers });
          environmentId ??= (
            await admin.createEnvironment({
              companyId: 'mem',
              name: 'fake',
              driver: 'sandbox',
              config: { provider: 'fake' },
            })
          ).id;
          const latencies: number[] = [];
          for (let n = 0; n < runs + 5; n++) {
            const id = `${taskQueue}-${n}`;
            const t = performance.now();
            await client.startRunAndWaitReady({
              companyId: 'mem',
              heartbeatRunId: id,
              environmentId,
              workspace: { baseCwd: cwd, cwd },
            });
            if (n >= 5) latencies.push(performance.now() - t);
            await client.completeRun('mem', id, { status: 'succeeded' });
          }
          p50s.get(setting.label)!.push(median(latencies));
          console.log(`rep ${rep + 1} ${setting.label}: start→ready p50 ${round1(median(latencies))} ms`);
        } finally {
          await connection.close();
          await worker.stop();
          await server.stop();
        }
      }
    }
  } finally {
    await database.close();
    await stopEmbeddedStore(dataDir);
  }
  console.log(`\nstart→ready p50 ms of ${runs} sequential runs, median (min–max) of ${REPS} reps`);
  console.log('| dev server | start→ready p50 ms |\n| --- | --- |');
  for (const [label, xs] of p50s) {
    console.log(`| ${label} | ${round1(median(xs))} (${round1(Math.min(...xs))}–${round1(Math.max(...xs))}) |`);
  }
  rmSync(scratch, { recursive: true, force: true });
  rmSync(cwd, { recursive: true, force: true });
}

(values['dev-server'] ? devServerSettings() : main()).then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
