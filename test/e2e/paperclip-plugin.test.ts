// A Paperclip sandbox-provider plugin under envrun, by configuration only: the folder sandbox of
// test/fixtures/paperclip-plugin (written with the published SDK, run as a real plugin worker) named in
// ENVRUN_PAPERCLIP_PLUGINS of an `envrun` worker process and of the CLI. Full runs: the provision command
// runs inside the plugin's folder, exec reaches it, release records the plugin's receipt and the folder is
// gone; a reused sandbox serves the next run and is destroyed when its environment is archived; a plugin
// worker killed with SIGKILL is restarted and the next step works, and an envrun worker killed with
// SIGKILL is replaced by one that resumes the lease through the plugin. Nothing is left behind.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { EnvRunClient } from '../../client/runs.js';
import { Store } from '../../store/store.js';
import { audit } from '../support/audit.js';
import { BIN, type CliResult } from '../support/cli.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { tempWorkspace, until } from '../support/runs.js';

const MAIN = fileURLToPath(new URL('../../dist/worker/main.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/paperclip-plugin', import.meta.url));
const PLUGINS = `${FIXTURE},${join(FIXTURE, 'exec-only')}`;
const taskQueue = uniqueId('paperclip');
const root = join(inject('tmpRoot'), taskQueue);
const dataDir = join(root, 'worker');
let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
let connection: Connection;
let client: EnvRunClient;
let worker: { child: ChildProcess; log: () => string } | null = null;

const baseEnv = () => ({
  PATH: process.env.PATH!,
  HOME: process.env.HOME ?? '/tmp',
  TEMPORAL_ADDRESS: inject('temporalAddress'),
  DATABASE_URL: db.url,
  ENVRUN_TASK_QUEUE: taskQueue,
  ENVRUN_PAPERCLIP_PLUGINS: PLUGINS,
});

async function startWorker(): Promise<void> {
  mkdirSync(dataDir, { recursive: true });
  const child = spawn(process.execPath, [MAIN], {
    env: {
      ...baseEnv(),
      ENVRUN_DATA_DIR: dataDir,
      ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
      ENVRUN_REAPER_EVERY: 'off',
      ENVRUN_SHUTDOWN_GRACE_MS: '1000',
      ENVRUN_LOG_LEVEL: 'INFO',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  worker = { child, log: () => log };
  await until('the worker polls', async () => log.includes(`taskQueue=${taskQueue}`), 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${log}`);
  });
}

/** The CLI in its own data folder, with the same plugins configured: env create, probe and archive run here. */
function envrun(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const cliDir = join(root, 'cli');
    mkdirSync(cliDir, { recursive: true });
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...baseEnv(), ENVRUN_DATA_DIR: cliDir } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}
async function cli<T = any>(args: string[]): Promise<T> {
  const res = await envrun([...args, '--json']);
  expect(res.code, `envrun ${args.join(' ')}: ${res.stderr}`).toBe(0);
  return JSON.parse(res.stdout) as T;
}

interface Call {
  method: string;
  providerLeaseId: string | null;
  pid: number;
}
const calls = (rootDir: string): Call[] =>
  readFileSync(join(rootDir, '.calls.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Call);
/** The plugin's sandbox folders (its own dot-files aside). */
const sandboxes = (rootDir: string) =>
  existsSync(rootDir) ? readdirSync(rootDir).filter((f) => !f.startsWith('.')) : [];
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function createEnv(companyId: string, provider: string, extra: Record<string, unknown> = {}) {
  const rootDir = join(root, uniqueId('sandboxes'));
  const env = await cli<{ id: string; config: Record<string, unknown> }>([
    'env',
    'create',
    '--company',
    companyId,
    '--name',
    provider,
    '--driver',
    'sandbox',
    '--config',
    JSON.stringify({ provider, rootDir: `${rootDir}/x/..`, ...extra }),
  ]);
  return { env, rootDir };
}

async function start(companyId: string, runId: string, envId: string, cwd: string, provision: string) {
  await cli([
    'run',
    'start',
    '--company',
    companyId,
    '--run',
    runId,
    '--env',
    envId,
    '--cwd',
    cwd,
    '--provision',
    provision,
    '--wait',
  ]);
}
const sh = (script: string) => ({ command: 'sh', args: ['-c', script], env: { PATH: '/usr/bin:/bin' } });

beforeAll(async () => {
  db = await freshDatabase();
  store = new Store(db.db);
  connection = await Connection.connect({ address: inject('temporalAddress') });
  client = new EnvRunClient({ client: new Client({ connection }), taskQueue });
  await startWorker();
}, 90_000);

afterAll(async () => {
  worker?.child.kill('SIGKILL');
  await connection?.close();
  await db?.close();
});

it('lifecycle: provision inside the plugin folder, exec, release with the receipt recorded (syncIn and exec-only plugins)', async () => {
  const companyId = uniqueId('co');
  const runs: string[] = [];
  for (const provider of ['folder-sandbox', 'folder-sandbox-exec']) {
    const { env, rootDir } = await createEnv(companyId, provider);
    // Validated by the plugin in the CLI's own plugin worker: its normalized config is what is stored.
    expect(env.config).toEqual({ provider, rootDir, reuseLease: false });
    const probe = await cli<{ ok: boolean; diagnostics: { severity: string }[] }>([
      'env',
      'probe',
      env.id,
      '--company',
      companyId,
    ]);
    expect(probe.ok).toBe(true);
    expect(probe.diagnostics.map((d) => d.severity)).toEqual(['info', 'warning']);

    const ws = tempWorkspace();
    writeFileSync(join(ws, 'input.txt'), 'from the host\n');
    const runId = uniqueId('run');
    runs.push(runId);
    await start(companyId, runId, env.id, ws, 'pwd > provisioned && cat input.txt >> provisioned');
    const [folder] = sandboxes(rootDir);
    const sandboxWs = join(rootDir, folder!, 'workspace');
    expect(folder).toBe(`${runId}-1`);
    // The provision command ran in the sandbox's folder, not in the control plane's.
    expect(readFileSync(join(sandboxWs, 'provisioned'), 'utf8')).toBe(`${sandboxWs}\nfrom the host\n`);
    expect(existsSync(join(ws, 'provisioned'))).toBe(false);
    const out = await client.exec(companyId, runId, sh('cat provisioned && echo agent > out.txt'));
    expect(out).toMatchObject({ exitCode: 0, stdout: `${sandboxWs}\nfrom the host\n` });

    const ended = await client.completeRun(companyId, runId, { status: 'succeeded' });
    expect(ended.phase).toBe('released');
    const lease = (await store.findRunLease(companyId, runId))!;
    expect(lease).toMatchObject({
      status: 'released',
      cleanupStatus: 'success',
      providerLeaseId: `folder://${runId}-1`,
    });
    expect(lease.metadata?.termination).toEqual({ providerLeaseId: `folder://${runId}-1`, state: 'destroyed' });
    // Synced back through the safe copy; the sandbox is gone.
    expect(readFileSync(join(ws, 'out.txt'), 'utf8')).toBe('agent\n');
    expect(sandboxes(rootDir)).toEqual([]);
    const methods = calls(rootDir).map((c) => c.method);
    expect(methods.includes('environmentSyncIn')).toBe(provider === 'folder-sandbox');
    expect(methods.filter((m) => m === 'environmentReleaseLease')).toHaveLength(1);
  }
  await audit({ client, store, fakeRoot: join(dataDir, 'sandboxes', 'fake') }, companyId, runs);
}, 180_000);

it('reuse: the next run gets the same folder; archiving the environment destroys it', async () => {
  const companyId = uniqueId('co');
  const { env, rootDir } = await createEnv(companyId, 'folder-sandbox', { leasePolicy: 'reuse_by_environment' });
  const [a, b] = [uniqueId('run-a'), uniqueId('run-b')];
  await start(companyId, a, env.id, tempWorkspace(), 'echo a >> runs');
  await client.completeRun(companyId, a, { status: 'succeeded' });
  expect(sandboxes(rootDir)).toEqual([`${a}-1`]);
  await start(companyId, b, env.id, tempWorkspace(), 'echo b >> runs');
  expect(await client.exec(companyId, b, sh('cat runs'))).toMatchObject({ exitCode: 0, stdout: 'a\nb\n' });
  await client.completeRun(companyId, b, { status: 'succeeded' });
  const leases = [(await store.findRunLease(companyId, a))!, (await store.findRunLease(companyId, b))!];
  expect(leases.map((l) => l.providerLeaseId)).toEqual([`folder://${a}-1`, `folder://${a}-1`]);
  expect(leases.map((l) => `${l.status}/${l.cleanupStatus}`)).toEqual(['released/success', 'released/success']);
  expect(leases.map((l) => l.metadata?.termination)).toEqual([undefined, undefined]);
  // Kept: the plugin was never asked to release it; the second run resumed (or adopted) it.
  expect(calls(rootDir).map((c) => c.method)).not.toContain('environmentReleaseLease');
  expect(sandboxes(rootDir)).toEqual([`${a}-1`]);

  const archived = await cli<{ keptResources: { destroyed: number; failed: number } }>([
    'env',
    'archive',
    env.id,
    '--company',
    companyId,
  ]);
  expect(archived.keptResources).toMatchObject({ destroyed: 1, failed: 0 });
  expect(sandboxes(rootDir)).toEqual([]);
  expect(calls(rootDir).filter((c) => c.method === 'environmentDestroyLease')).toHaveLength(1);
  for (const id of [a, b]) {
    const lease = (await store.findRunLease(companyId, id))!;
    expect(lease.metadata?.termination, id).toEqual({ providerLeaseId: `folder://${a}-1`, state: 'destroyed' });
  }
  await audit({ client, store, fakeRoot: join(dataDir, 'sandboxes', 'fake') }, companyId, [a, b]);
}, 180_000);

it('a plugin worker killed mid-run is restarted; an envrun worker killed mid-run is replaced and resumes the lease', async () => {
  const companyId = uniqueId('co');
  const { env, rootDir } = await createEnv(companyId, 'folder-sandbox');
  const runId = uniqueId('run');
  const ws = tempWorkspace();
  await start(companyId, runId, env.id, ws, 'echo provisioned > marker');
  const sandboxWs = join(rootDir, `${runId}-1`, 'workspace');
  const first = calls(rootDir).at(-1)!.pid;
  const died = () => (worker!.log().match(/plugin worker died/g) ?? []).length;
  process.kill(first, 'SIGKILL');
  await until('the plugin worker is seen dead', async () => died() > 0, 20_000);
  expect(await client.exec(companyId, runId, sh('pwd && cat marker'))).toMatchObject({
    exitCode: 0,
    stdout: `${sandboxWs}\nprovisioned\n`,
  });
  const second = calls(rootDir).at(-1)!.pid;
  expect(second).not.toBe(first);

  // The envrun worker dies: its plugin worker goes with it (its stdin closes); a new worker resumes the lease.
  worker!.child.kill('SIGKILL');
  await until('the old plugin worker exits', async () => !alive(second), 20_000);
  await startWorker();
  expect(await client.exec(companyId, runId, sh('echo after >> marker && cat marker'))).toMatchObject({
    exitCode: 0,
    stdout: 'provisioned\nafter\n',
  });
  const after = calls(rootDir).filter((c) => c.pid !== first && c.pid !== second);
  expect(after.map((c) => c.method)).toEqual(['environmentResumeLease', 'environmentExecute']);
  await client.completeRun(companyId, runId, { status: 'succeeded' });
  const lease = (await store.findRunLease(companyId, runId))!;
  expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
  expect(lease.metadata?.termination).toEqual({ providerLeaseId: `folder://${runId}-1`, state: 'destroyed' });
  expect(readFileSync(join(ws, 'marker'), 'utf8')).toBe('provisioned\nafter\n');
  expect(sandboxes(rootDir)).toEqual([]);
  await audit({ client, store, fakeRoot: join(dataDir, 'sandboxes', 'fake') }, companyId, [runId]);
  expect(worker!.log()).not.toMatch(/"level":"(error|fatal)"/);
}, 180_000);
