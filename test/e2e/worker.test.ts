// The worker process as ops run it: configuration checked at start, a prebuilt workflow bundle, graceful
// shutdown on SIGTERM, also when the SIGTERM goes to `npm run worker` (npm relays it; nothing is orphaned).
import { Client, Connection } from '@temporalio/client';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { EnvRunClient } from '../../client/runs.js';
import { freePort } from '../../lib/net.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { describeProcesses, killAll, processTree, stillRunning, type ProcessInfo } from '../support/process-tree.js';
import { runRequest, until } from '../support/runs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = fileURLToPath(new URL('../../worker/main.ts', import.meta.url));
let db: Awaited<ReturnType<typeof freshDatabase>>;

beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  await db?.close();
});

function startWorker(env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), MAIN], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

it('a bad configuration value stops the worker with a message naming it (exit 2)', async () => {
  const w = startWorker({ ENVRUN_SHUTDOWN_GRACE_MS: 'soon', DATABASE_URL: db.url });
  expect(await w.exited).toBe(2);
  expect(w.err()).toContain('ENVRUN_SHUTDOWN_GRACE_MS');
  const w2 = startWorker({ DATABASE_URL: 'mysql://nope' });
  expect(await w2.exited).toBe(2);
  expect(w2.err()).toContain('DATABASE_URL: must be a postgres:// or postgresql:// URL');
});

it('serves runs from a prebuilt bundle, exports Prometheus metrics, and drains on SIGTERM', async () => {
  const taskQueue = uniqueId('proc');
  const metricsAddress = `127.0.0.1:${await freePort()}`;
  const w = startWorker({
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: db.url,
    ENVRUN_TASK_QUEUE: taskQueue,
    ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
    ENVRUN_SHUTDOWN_GRACE_MS: '2000',
    ENVRUN_LOG_LEVEL: 'INFO', // the start and stop lines are info lines
    ENVRUN_REAPER_EVERY: 'off',
    ENVRUN_METRICS_ADDRESS: metricsAddress,
    ENVRUN_DATA_DIR: `${inject('tmpRoot')}/${taskQueue}`,
  });
  for (let i = 0; i < 200 && !w.out().includes('worker on '); i++) await new Promise((r) => setTimeout(r, 100));
  expect(w.out(), w.err()).toContain(`taskQueue=${taskQueue}`);
  expect(w.out()).not.toContain(new URL(db.url).password || 'no-password-in-url');

  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const client = new EnvRunClient({ client: new Client({ connection }), taskQueue });
  const req = runRequest();
  const result = await client.startRunAndWaitReady(req);
  expect(result.executionTarget).toMatchObject({ kind: 'local' });
  await client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
  await connection.close();
  let metrics = '';
  for (let i = 0; i < 40 && !metrics.includes('envrun_requested_to_ready'); i++) {
    metrics = await fetch(`http://${metricsAddress}/metrics`).then(
      (r) => r.text(),
      () => '',
    );
    if (!metrics.includes('envrun_requested_to_ready')) await new Promise((r) => setTimeout(r, 250));
  }
  expect(metrics).toMatch(/^envrun_run_phase_entered\{.*phase="ready".*\} 1$/m);
  expect(metrics).toMatch(/^envrun_requested_to_ready_bucket\{.*driver="local".*\} \d+$/m);
  expect(metrics).toMatch(/^temporal_workflow_completed\{/m); // Temporal's own runtime metrics

  w.child.kill('SIGTERM');
  expect(await w.exited).toBe(0);
  expect(w.out()).toContain('"msg":"worker stopped"');
});

it('SIGTERM to `npm run worker` stops the worker: no process of it is left', async () => {
  const taskQueue = uniqueId('npmw');
  const npm = spawn('npm', ['run', 'worker'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? '/tmp',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      DATABASE_URL: db.url,
      ENVRUN_TASK_QUEUE: taskQueue,
      ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
      ENVRUN_SHUTDOWN_GRACE_MS: '2000',
      ENVRUN_LOG_LEVEL: 'INFO',
      ENVRUN_REAPER_EVERY: 'off',
      ENVRUN_DATA_DIR: `${inject('tmpRoot')}/${taskQueue}`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  npm.stdout.on('data', (c: Buffer) => (output += c.toString()));
  npm.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)));
  let started: ProcessInfo[] = [];
  try {
    // `npm run build` first, then the worker.
    await until('the worker to poll', async () => output.includes('worker on '), 240_000);
    started = processTree(npm.pid!);
    expect(describeProcesses(started).join('\n')).toContain('dist/worker/main.js');
    npm.kill('SIGTERM'); // to npm alone, as a supervisor sends it
    await exited;
    await until('the worker to end', async () => stillRunning(started).length === 0, 30_000).catch(() => undefined);
    expect(describeProcesses(stillRunning(started))).toEqual([]);
    expect(output).toContain('"msg":"worker stopped"'); // it drained, not killed
  } finally {
    npm.kill('SIGKILL');
    killAll(started);
  }
}, 300_000);
