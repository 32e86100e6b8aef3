// Two worker hosts as a user runs them: two `envrun` worker processes with their own ENVRUN_DATA_DIR and
// ENVRUN_HOST_ID, one PostgreSQL and one task queue, and the `envrun` CLI in a third, empty data folder.
// Every fake and bubblewrap run gets ready on one of the hosts, `run exec` from the CLI reaches the right
// sandbox, and every lease is released there. Then one host is killed (SIGKILL): the runs it was realizing
// are placed again on the other host, its ready runs end `environment_host_lost`, its leases end `lost`,
// and the audit accounts for every run.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { temporal as proto } from '@temporalio/proto';
import { EnvRunClient } from '../../client/runs.js';
import { hostTaskQueue } from '../../contracts/index.js';
import { Store } from '../../store/store.js';
import { audit } from '../support/audit.js';
import { BIN, type CliResult } from '../support/cli.js';
import { freshDatabase, TEST_HOST_STALE_MS, uniqueId } from '../support/harness.js';
import { tempWorkspace, until } from '../support/runs.js';

const MAIN = fileURLToPath(new URL('../../dist/worker/main.js', import.meta.url));
const taskQueue = uniqueId('two-hosts');
const root = join(inject('tmpRoot'), taskQueue);
const hosts = { a: uniqueId('host-a'), b: uniqueId('host-b') };
const dataDir = { a: join(root, 'a'), b: join(root, 'b'), cli: join(root, 'cli') };
let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
const workers = new Map<string, { child: ChildProcess; log: () => string }>();
let connection: Connection;
let client: EnvRunClient;

function startWorker(host: keyof typeof hosts) {
  mkdirSync(dataDir[host], { recursive: true });
  const child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? '/tmp',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      DATABASE_URL: db.url,
      ENVRUN_TASK_QUEUE: taskQueue,
      ENVRUN_DATA_DIR: dataDir[host],
      ENVRUN_HOST_ID: hosts[host],
      ENVRUN_HOST_STALE_MS: String(TEST_HOST_STALE_MS),
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
  workers.set(host, { child, log: () => log });
}

/** The CLI in its own empty data folder: it has no store, provider or sandbox of its own to act on. */
function envrun(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: {
        PATH: process.env.PATH!,
        HOME: process.env.HOME ?? '/tmp',
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        DATABASE_URL: db.url,
        ENVRUN_TASK_QUEUE: taskQueue,
        ENVRUN_DATA_DIR: dataDir.cli,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function cli<T = unknown>(args: string[]): Promise<T> {
  const res = await envrun([...args, '--json']);
  expect(res.code, `envrun ${args.join(' ')}: ${res.stderr}`).toBe(0);
  return JSON.parse(res.stdout) as T;
}

/** Files left in a host's sandboxes (of every provider), empty folders aside. */
function sandboxFiles(dir: string): string[] {
  const sandboxes = join(dir, 'sandboxes');
  if (!existsSync(sandboxes)) return [];
  return readdirSync(sandboxes, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name));
}

async function pollsOf(hostId: string): Promise<number> {
  const described = await connection.workflowService.describeTaskQueue({
    namespace: 'default',
    taskQueue: {
      name: hostTaskQueue(taskQueue, hostId),
      kind: proto.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL,
    },
    taskQueueType: proto.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  });
  return described.pollers?.length ?? 0;
}

beforeAll(async () => {
  db = await freshDatabase();
  store = new Store(db.db);
  mkdirSync(dataDir.cli, { recursive: true });
  connection = await Connection.connect({ address: inject('temporalAddress') });
  client = new EnvRunClient({ client: new Client({ connection }), taskQueue });
  startWorker('a');
  startWorker('b');
  await until(
    'both hosts poll their own queues',
    async () => (await pollsOf(hosts.a)) * (await pollsOf(hosts.b)) > 0,
    60_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${[...workers.values()].map((w) => w.log()).join('\n')}`);
  });
}, 90_000);

afterAll(async () => {
  for (const { child } of workers.values()) child.kill('SIGKILL');
  await connection?.close();
  await db?.close();
});

it('fake and bubblewrap runs from a CLI with an empty data folder: ready, exec in the right sandbox, released', async () => {
  const companyId = uniqueId('co');
  const envs = [
    await cli<{ id: string }>([
      'env',
      'create',
      '--company',
      companyId,
      '--name',
      'fake',
      '--driver',
      'sandbox',
      '--config',
      '{"provider":"fake"}',
    ]),
    await cli<{ id: string }>([
      'env',
      'create',
      '--company',
      companyId,
      '--name',
      'bwrap',
      '--driver',
      'sandbox',
      '--config',
      '{"provider":"bubblewrap"}',
    ]),
  ];
  const runs = Array.from({ length: 8 }, (_, i) => ({ id: `run-${i}`, env: envs[i % 2]!.id }));
  await Promise.all(
    runs.map(({ id, env }) =>
      cli([
        'run',
        'start',
        '--company',
        companyId,
        '--run',
        id,
        '--env',
        env,
        '--cwd',
        tempWorkspace(),
        '--provision',
        `echo ${id} > whoami`,
        '--wait',
      ]),
    ),
  );
  const leases = await store.listLeases(companyId);
  const placed = new Set(leases.map((l) => l.metadata?.hostId));
  expect(
    [...placed].every((h) => h === hosts.a || h === hosts.b),
    String([...placed]),
  ).toBe(true);

  for (const { id } of runs) {
    const out = await envrun(['run', 'exec', '--company', companyId, '--run', id, '--', 'cat', 'whoami']);
    expect(out, `exec of ${id}`).toMatchObject({ code: 0, stdout: `${id}\n` });
  }
  for (const { id } of runs) await cli(['run', 'complete', '--company', companyId, '--run', id]);
  const ended = await store.listLeases(companyId);
  expect(ended.map((l) => `${l.status}/${l.cleanupStatus}`)).toEqual(runs.map(() => 'released/success'));
  expect(sandboxFiles(dataDir.a)).toEqual([]);
  expect(sandboxFiles(dataDir.b)).toEqual([]);
  // The CLI made nothing in its own folder: no store, no sandbox.
  expect(readdirSync(dataDir.cli)).toEqual([]);
}, 180_000);

it('kill -9 one host: its realizing runs are placed again on the other, its ready runs end host_lost', async () => {
  const companyId = uniqueId('co');
  const env = await cli<{ id: string }>([
    'env',
    'create',
    '--company',
    companyId,
    '--name',
    'fake',
    '--driver',
    'sandbox',
    '--config',
    '{"provider":"fake"}',
  ]);
  const start = (id: string, provision: string) =>
    cli([
      'run',
      'start',
      '--company',
      companyId,
      '--run',
      id,
      '--env',
      env.id,
      '--cwd',
      tempWorkspace(),
      '--provision',
      provision,
      '--host-pickup-ms',
      '2000',
    ]);
  // Ready runs on both hosts first (until two are on host b), then slow ones that are realizing when it dies.
  const hostOf = async (id: string) =>
    (await store.findRunLease(companyId, id))?.metadata?.hostId as string | undefined;
  const quick: string[] = [];
  const readyOnB: string[] = [];
  while (readyOnB.length < 2 && quick.length < 24) {
    const id = `quick-${quick.length}`;
    quick.push(id);
    await start(id, 'true');
    await client.waitReady(companyId, id);
    if ((await hostOf(id)) === hosts.b) readyOnB.push(id);
  }
  expect(readyOnB).toHaveLength(2);
  const slow = Array.from({ length: 6 }, (_, i) => `slow-${i}`);
  for (const id of slow) await start(id, 'sleep 8');
  const onB = await until(
    'slow runs realizing on host b',
    async () => {
      const on = [];
      for (const id of slow) {
        const state = await client.getRun(companyId, id);
        if (state?.phase === 'realizing' && (await hostOf(id)) === hosts.b) on.push(id);
      }
      return on.length > 0 ? on : null;
    },
    60_000,
  );
  workers.get('b')!.child.kill('SIGKILL');

  // Every slow run gets ready, those of host b on host a, with a fresh lease.
  for (const id of slow) {
    const ready = await client.waitReady(companyId, id);
    expect(ready.lease.metadata?.hostId, id).toBe(hosts.a);
  }
  for (const id of onB) {
    const leases = await store.listRunLeases(companyId, id);
    expect(
      leases.map((l) => `${l.status}@${l.metadata?.hostId}`),
      id,
    ).toEqual([`lost@${hosts.b}`, `active@${hosts.a}`]);
    expect((await client.getRun(companyId, id))?.lostLeases).toHaveLength(1);
  }
  // Completing a ready run of the dead host: its release finds the host gone; the lease ends lost.
  const [completedOnB, reaped] = readyOnB as [string, string];
  const completions = new Map<string, string>();
  const onBState = await client.completeRun(companyId, completedOnB, { status: 'succeeded' });
  completions.set(completedOnB, onBState.error?.code ?? onBState.phase);
  // The reaper's sweep finds the other, unasked: it fails environment_host_lost.
  await cli(['reaper', 'run-once']);
  await until(`${reaped} failed`, async () => (await client.getRun(companyId, reaped))?.phase === 'failed', 60_000);
  completions.set(reaped, (await client.getRun(companyId, reaped))?.error?.code ?? 'no error');
  for (const id of [...quick, ...slow].filter((r) => !readyOnB.includes(r))) {
    const state = await client.completeRun(companyId, id, { status: 'succeeded' });
    completions.set(id, state.error?.code ?? state.phase);
  }
  for (const id of [...quick, ...slow]) {
    expect(completions.get(id), id).toBe(readyOnB.includes(id) ? 'environment_host_lost' : 'released');
  }
  const outcomes = await audit({ client, store, fakeRoot: join(dataDir.a, 'sandboxes', 'fake') }, companyId, [
    ...quick,
    ...slow,
  ]);
  for (const id of [...quick, ...slow]) {
    expect(outcomes.get(id), id).toBe(readyOnB.includes(id) ? 'failed:environment_host_lost' : 'completed');
  }
  for (const id of readyOnB) {
    const [lease] = await store.listRunLeases(companyId, id);
    expect(lease).toMatchObject({ status: 'lost', cleanupStatus: 'pending' });
  }
  expect(sandboxFiles(dataDir.a)).toEqual([]);
  expect(workers.get('a')!.log()).not.toMatch(/"level":"(error|fatal)"/);
}, 300_000);
