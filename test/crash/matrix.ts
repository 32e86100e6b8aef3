// The crash matrix: the envrun worker, the Paperclip plugin worker, or both are killed with SIGKILL between
// two steps of a run (acquire→realize, realize→exec, exec→release), and the run carries on: after an envrun
// worker's death a new one (same task queue, same data folder) takes over; after a plugin worker's death the
// envrun worker restarts it. Each case checks that the run continues in the sandbox it acquired (same
// provider lease id; the provision command's file is what exec reads; one sandbox folder only), that nothing
// is left once released (no sandbox folder, no process of the killed workers or of the sandbox), and that
// the lease tells the truth (`released`/`success`, the provider's termination receipt in its metadata).
//
// The cases are data (MATRIX, SLICE); `crashSuite(cases)` runs them in order on real `envrun` worker
// processes (dist/worker/main.js), one database, one task queue and one data folder per file. The Paperclip
// cases use the folder sandbox of test/fixtures/paperclip-plugin as a real plugin worker.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { loadProviders, type ProviderRegistry } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { Store } from '../../store/store.js';
import { audit } from '../support/audit.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { describeProcesses, processTree, stillRunning, type ProcessInfo } from '../support/process-tree.js';
import { tempWorkspace, until } from '../support/runs.js';
import { hostProcessesWith } from '../support/sandbox.js';

export type CrashProvider = 'paperclip' | 'bubblewrap' | 'fake';
/** The two steps the kill falls between. */
export type CrashGap = 'acquire→realize' | 'realize→exec' | 'exec→release';
/** Whose process is killed: the envrun worker, the plugin worker it runs, or both at once. */
export type CrashTarget = 'envrun' | 'plugin' | 'both';

export interface CrashCase {
  provider: CrashProvider;
  gap: CrashGap;
  kill: CrashTarget;
}

export const GAPS: CrashGap[] = ['acquire→realize', 'realize→exec', 'exec→release'];

/** Every case: each gap, for the plugin each target, for bubblewrap and the fake provider the envrun worker. */
export const MATRIX: CrashCase[] = GAPS.flatMap((gap) => [
  { provider: 'paperclip', gap, kill: 'envrun' },
  { provider: 'paperclip', gap, kill: 'plugin' },
  { provider: 'paperclip', gap, kill: 'both' },
  { provider: 'bubblewrap', gap, kill: 'envrun' },
  { provider: 'fake', gap, kill: 'envrun' },
]);

/** `npm test`'s share: one case per gap, the provider and the target rotating. */
export const SLICE: CrashCase[] = [
  { provider: 'paperclip', gap: 'acquire→realize', kill: 'both' },
  { provider: 'bubblewrap', gap: 'realize→exec', kill: 'envrun' },
  { provider: 'paperclip', gap: 'exec→release', kill: 'plugin' },
];

export const caseName = (c: CrashCase) =>
  `${c.provider}: kill ${c.kill === 'both' ? 'both workers' : `the ${c.kill} worker`} between ${c.gap}`;

const MAIN = fileURLToPath(new URL('../../dist/worker/main.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/paperclip-plugin', import.meta.url));
const PLUGIN_WORKER = join(FIXTURE, 'worker.mjs');
const PLUGIN_ID = 'envrun-test.folder-sandbox';
const PLUGIN_KEY = 'folder-sandbox';

interface Worker {
  child: ChildProcess;
  log: () => string;
}

interface Call {
  method: string;
  providerLeaseId: string | null;
  pid: number;
}

/** Registers the cases as tests of the current file, in order, with the workers and stores they share. */
export function crashSuite(cases: CrashCase[]): void {
  const taskQueue = uniqueId('crash');
  let root = '';
  let dataDir = '';
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let store: Store;
  let connection: Connection;
  let client: EnvRunClient;
  let admin: EnvRunAdmin;
  let adminProviders: ProviderRegistry | undefined;
  let worker: Worker | null = null;
  const started: Worker[] = [];
  const times: string[] = [];
  /** HOME folders of killed plugin workers: checked by each case, removed at the end whatever it found. */
  const killedHomes: string[] = [];
  let suiteStart = 0;

  const workerEnv = () => ({
    PATH: process.env.PATH!,
    HOME: process.env.HOME ?? '/tmp',
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: db.url,
    ENVRUN_TASK_QUEUE: taskQueue,
    ENVRUN_DATA_DIR: dataDir,
    ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
    ENVRUN_PAPERCLIP_PLUGINS: FIXTURE,
    ENVRUN_REAPER_EVERY: 'off',
    ENVRUN_SHUTDOWN_GRACE_MS: '1000',
    ENVRUN_LOG_LEVEL: 'INFO',
  });

  async function startWorker(): Promise<Worker> {
    const child = spawn(process.execPath, [MAIN], { env: workerEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    const w = { child, log: () => log };
    started.push(w);
    await until('the worker polls', async () => log.includes(`taskQueue=${taskQueue}`), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${log}`);
    });
    worker = w;
    return w;
  }

  /** The worker's plugin workers: its children running the fixture's worker.mjs. */
  const pluginWorkersOf = (w: Worker): ProcessInfo[] =>
    processTree(w.child.pid!).filter((p) => p.ppid === w.child.pid && p.command.includes(PLUGIN_WORKER));

  /** The HOME the plugin host gave a plugin worker (a private folder of its own). */
  const homeOf = (p: ProcessInfo): string => {
    const env = readFileSync(`/proc/${p.pid}/environ`, 'utf8').split('\0');
    const home = env.find((e) => e.startsWith('HOME='))?.slice('HOME='.length);
    if (!home) throw new Error(`plugin worker ${p.pid} has no HOME`);
    return home;
  };

  /** Gone from /proc, not even a zombie: a child is reaped only once its parent has seen it exit. */
  const reaped = (p: ProcessInfo) => !processTree(p.pid).some((q) => q.pid === p.pid && q.start === p.start);

  /**
   * Kills `target` and returns once the run may go on: a killed envrun worker replaced by a new one (after
   * everything it ran is gone), a killed plugin worker reaped by its envrun worker (which restarts it).
   */
  async function crash(target: CrashTarget): Promise<{ killed: ProcessInfo[]; homes: string[] }> {
    const w = worker!;
    const tree = processTree(w.child.pid!);
    const plugins = pluginWorkersOf(w);
    expect(plugins, describeProcesses(tree).join('\n')).toHaveLength(1);
    const plugin = plugins[0]!;
    const killed = target === 'plugin' ? [plugin] : tree;
    const homes = [homeOf(plugin)];
    killedHomes.push(...homes);
    if (target !== 'envrun') process.kill(plugin.pid, 'SIGKILL');
    if (target === 'plugin') {
      await until('the envrun worker reaps its plugin worker', async () => reaped(plugin), 20_000);
      return { killed, homes };
    }
    const exited = new Promise((r) => w.child.once('exit', r));
    w.child.kill('SIGKILL');
    await exited;
    worker = null;
    // The plugin worker (its own process group) sees its stdin close and exits.
    await until(
      'every process of the killed worker is gone',
      async () => stillRunning(tree).length === 0,
      20_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${describeProcesses(stillRunning(tree)).join('; ')}`);
    });
    await startWorker();
    return { killed, homes };
  }

  /** The sandboxes the provider holds for the run, as provider lease ids. */
  function sandboxesOf(c: CrashCase, runId: string, pluginRoot: string): string[] {
    const list = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => !f.startsWith('.')) : []);
    switch (c.provider) {
      case 'paperclip':
        return list(pluginRoot).map((n) => `folder://${n}`);
      case 'bubblewrap':
        return list(join(dataDir, 'sandboxes', 'bubblewrap'))
          .filter((n) => n.startsWith(`${runId}-`))
          .map((n) => `bwrap://${n}`);
      case 'fake':
        return list(join(dataDir, 'sandboxes', 'fake', 'leases', runId)).map((n) => `fake://${runId}/${n}`);
    }
  }

  /** The sandbox's workspace folder on this host, from its provider lease id. */
  function hostWorkspace(c: CrashCase, providerLeaseId: string, pluginRoot: string): string {
    switch (c.provider) {
      case 'paperclip':
        return join(pluginRoot, providerLeaseId.slice('folder://'.length), 'workspace');
      case 'bubblewrap':
        return join(dataDir, 'sandboxes', 'bubblewrap', providerLeaseId.slice('bwrap://'.length), 'workspace');
      case 'fake':
        return join(
          dataDir,
          'sandboxes',
          'fake',
          'leases',
          ...providerLeaseId.slice('fake://'.length).split('/'),
          'workspace',
        );
    }
  }

  async function createEnvironment(c: CrashCase, companyId: string, pluginRoot: string) {
    const config =
      c.provider === 'paperclip' ? { provider: PLUGIN_KEY, rootDir: pluginRoot } : { provider: c.provider };
    return admin.createEnvironment({ companyId, name: c.provider, driver: 'sandbox', config });
  }

  async function runCase(c: CrashCase): Promise<void> {
    if (!worker || worker.child.exitCode !== null || worker.child.signalCode !== null) await startWorker();
    const companyId = uniqueId('co');
    const runId = uniqueId('run');
    // On the provision and exec command lines: a process of this run still running afterwards is found by it.
    const token = uniqueId('crash-token');
    const pluginRoot = join(root, uniqueId('plugin-sandboxes'));
    const env = await createEnvironment(c, companyId, pluginRoot);
    const ws = tempWorkspace();
    writeFileSync(join(ws, 'input.txt'), `${token} input\n`);
    const workspace = { baseCwd: ws, cwd: ws };
    const runtimeOverlay = {
      provisionCommand: `pwd > provisioned && echo ${token} >> provisioned && cat input.txt >> provisioned`,
    };
    const sh = (script: string) => ({ command: 'sh', args: ['-c', script], env: { PATH: '/usr/bin:/bin' } });
    const calls = (): Call[] => {
      const file = join(pluginRoot, '.calls.jsonl');
      if (!existsSync(file)) return [];
      return readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Call);
    };
    let killed: ProcessInfo[] = [];
    let homes: string[] = [];
    let pidsBefore = new Set<number>();
    const crashHere = async (gap: CrashGap) => {
      if (c.gap !== gap) return;
      pidsBefore = new Set(calls().map((x) => x.pid));
      ({ killed, homes } = await crash(c.kill));
    };

    // acquire (→ realize)
    let acquired: string;
    if (c.gap === 'acquire→realize') {
      const leased = await client.startRunAndWaitLeased({ companyId, heartbeatRunId: runId, environmentId: env.id });
      acquired = leased.lease.providerLeaseId!;
      expect(acquired).toBeTruthy();
      expect(sandboxesOf(c, runId, pluginRoot)).toEqual([acquired]);
      await crashHere('acquire→realize');
      const ready = await client.realizeRun(companyId, runId, { workspace, runtimeOverlay });
      expect(ready.lease.providerLeaseId).toBe(acquired);
      expect(ready.executionTarget).toMatchObject({ transport: 'sandbox', providerLeaseId: acquired });
    } else {
      const ready = await client.startRunAndWaitReady({
        companyId,
        heartbeatRunId: runId,
        environmentId: env.id,
        workspace,
        runtimeOverlay,
      });
      acquired = ready.lease.providerLeaseId!;
      expect(ready.executionTarget).toMatchObject({ transport: 'sandbox', providerLeaseId: acquired });
    }

    // The provision command ran in the sandbox acquired, not in the control plane's folder.
    const sandboxWs = hostWorkspace(c, acquired, pluginRoot);
    const provisioned = `${c.provider === 'bubblewrap' ? '/workspace' : sandboxWs}\n${token}\n${token} input\n`;
    expect(readFileSync(join(sandboxWs, 'provisioned'), 'utf8')).toBe(provisioned);
    expect(existsSync(join(ws, 'provisioned'))).toBe(false);
    expect(sandboxesOf(c, runId, pluginRoot)).toEqual([acquired]);

    // (realize →) exec
    await crashHere('realize→exec');
    const out = await client.exec(companyId, runId, sh(`cat provisioned && echo ${token} > out.txt`));
    expect(out).toMatchObject({ exitCode: 0, stdout: provisioned });
    expect(readFileSync(join(sandboxWs, 'out.txt'), 'utf8')).toBe(`${token}\n`);
    expect(sandboxesOf(c, runId, pluginRoot)).toEqual([acquired]);

    // (exec →) release
    await crashHere('exec→release');
    const ended = await client.completeRun(companyId, runId, { status: 'succeeded' });
    expect(ended.phase).toBe('released');

    // The lease tells the truth: released by the provider, which destroyed the sandbox acquired.
    const lease = (await store.findRunLease(companyId, runId))!;
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success', providerLeaseId: acquired });
    expect(lease.metadata?.termination).toEqual({ providerLeaseId: acquired, state: 'destroyed' });
    // Nothing is left: no sandbox folder, no process of the run, none of the killed workers.
    expect(sandboxesOf(c, runId, pluginRoot)).toEqual([]);
    expect(existsSync(sandboxWs)).toBe(false);
    expect(hostProcessesWith(token)).toEqual([]);
    expect(describeProcesses(stillRunning(killed))).toEqual([]);
    const tree = processTree(worker!.child.pid!);
    expect(describeProcesses(tree.filter((p) => /(^|\/)bwrap /.test(p.command)))).toEqual([]);
    const live = pluginWorkersOf(worker!);
    expect(live, describeProcesses(tree).join('\n')).toHaveLength(1);
    if (c.provider === 'bubblewrap') {
      // The provider's record of the lease's sandboxes goes with the lease.
      const name = acquired.slice('bwrap://'.length);
      expect(existsSync(join(dataDir, 'sandboxes', '.bubblewrap-processes', name))).toBe(false);
    }
    if (c.provider !== 'fake') {
      // Synced back from the sandbox acquired: the provision's file and the exec's.
      expect(readFileSync(join(ws, 'provisioned'), 'utf8')).toBe(provisioned);
      expect(readFileSync(join(ws, 'out.txt'), 'utf8')).toBe(`${token}\n`);
    }
    if (c.provider === 'paperclip') {
      const all = calls();
      expect(all.filter((x) => x.method === 'environmentAcquireLease')).toHaveLength(1);
      expect(all.filter((x) => x.method === 'environmentReleaseLease')).toHaveLength(1);
      expect(all.filter((x) => x.providerLeaseId !== null && x.providerLeaseId !== acquired)).toEqual([]);
      // The plugin host's records of the lease (hints for a retried acquire, the realized cwd) and its
      // staging folders are gone with it.
      const hostDir = join(dataDir, 'paperclip', PLUGIN_ID, PLUGIN_KEY);
      const records = ['acquired', 'reuse', 'realized'].flatMap((kind) => {
        const dir = join(hostDir, 'leases', kind);
        return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')) : [];
      });
      expect(records.filter((r) => r.includes(acquired))).toEqual([]);
      const staging = join(hostDir, 'staging');
      expect(existsSync(staging) ? readdirSync(staging) : []).toEqual([]);
      // After the kill, the plugin worker that answers is a new one; a new envrun worker resumes the lease
      // before anything else.
      const after = all.filter((x) => !pidsBefore.has(x.pid));
      expect(after.length).toBeGreaterThan(0);
      if (c.kill !== 'plugin')
        expect(after[0]).toMatchObject({ method: 'environmentResumeLease', providerLeaseId: acquired });
    }
    await audit({ client, store, fakeRoot: join(dataDir, 'sandboxes', 'fake') }, companyId, [runId]);
    // The private HOME the plugin host made for a killed plugin worker goes too (unless the worker that
    // replaced it in the same envrun worker uses it still).
    const liveHome = homeOf(live[0]!);
    expect(
      homes.filter((h) => h !== liveHome && existsSync(h)),
      'HOME folders of killed plugin workers left behind',
    ).toEqual([]);
  }

  beforeAll(async () => {
    suiteStart = Date.now();
    root = join(inject('tmpRoot'), taskQueue);
    dataDir = join(root, 'worker');
    mkdirSync(dataDir, { recursive: true });
    db = await freshDatabase();
    store = new Store(db.db);
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new EnvRunClient({ client: new Client({ connection }), taskQueue, runDefaults: { awaitRetryMs: 0 } });
    // Environments are created as the CLI would: the plugin validates its config in a plugin worker of its own.
    adminProviders = await loadProviders({
      dataDir: join(root, 'admin'),
      providerModules: [],
      paperclipPlugins: [FIXTURE],
    });
    admin = new EnvRunAdmin({ runs: client, store, drivers: createDrivers(adminProviders) });
    await startWorker();
  }, 120_000);

  afterAll(async () => {
    const last = worker;
    if (last && last.child.exitCode === null && last.child.signalCode === null) {
      const tree = processTree(last.child.pid!);
      const exited = new Promise((r) => last.child.once('exit', r));
      last.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      // A clean stop takes its plugin worker with it.
      await until('the last worker and its plugin worker are gone', async () => stillRunning(tree).length === 0);
    }
    for (const w of started) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    for (const home of killedHomes)
      if (home.startsWith(join(tmpdir(), 'envrun-plugin-'))) rmSync(home, { recursive: true, force: true });
    await adminProviders?.close();
    await connection?.close();
    await db?.close();
    console.log(`crash cases (ms):\n${times.join('\n')}\ntotal with setup: ${Date.now() - suiteStart} ms`);
  }, 60_000);

  describe('crash matrix', () => {
    for (const c of cases) {
      it(
        caseName(c),
        async () => {
          const t0 = Date.now();
          try {
            await runCase(c);
          } catch (err) {
            // The live worker's warnings and errors, to read beside the failure.
            const lines = (worker?.log() ?? '').split('\n').filter((l) => /"level":"(warn|error|fatal)"/.test(l));
            if (lines.length) console.error(`${caseName(c)}: the worker's warnings:\n${lines.slice(-20).join('\n')}`);
            throw err;
          } finally {
            times.push(`${caseName(c)}: ${Date.now() - t0}`);
          }
        },
        180_000,
      );
    }
  });
}
