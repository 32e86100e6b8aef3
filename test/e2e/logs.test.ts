// The worker process's logs as an operator ships them: JSON lines on stdout (the worker's own, Temporal's
// SDK and Core's), one line per step started and finished carrying the run's ids, at ENVRUN_LOG_LEVEL.
import { Client, Connection } from '@temporalio/client';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { EnvRunClient } from '../../client/runs.js';
import { runWorkflowId } from '../../contracts/index.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { expectRunError, runRequest } from '../support/runs.js';

const MAIN = fileURLToPath(new URL('../../worker/main.ts', import.meta.url));
const RUN_STEPS = ['resolveEnvironment', 'acquireLease', 'prepareWorkspace', 'releaseLease'];
const BELOW_WARN = ['trace', 'debug', 'info'];

type Line = Record<string, unknown>;
let db: Awaited<ReturnType<typeof freshDatabase>>;

beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  await db?.close();
});

function startWorker(level: string) {
  const taskQueue = uniqueId('logs');
  const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), MAIN], {
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? '/tmp',
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      DATABASE_URL: db.url,
      ENVRUN_TASK_QUEUE: taskQueue,
      ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
      ENVRUN_SHUTDOWN_GRACE_MS: '2000',
      ENVRUN_LOG_LEVEL: level,
      ENVRUN_REAPER_EVERY: 'off',
      ENVRUN_DATA_DIR: `${inject('tmpRoot')}/${taskQueue}`,
    },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  /** Every stdout line, parsed: a line that is not a JSON object fails the test. */
  const lines = (): Line[] =>
    stdout
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        let parsed: unknown;
        expect(() => (parsed = JSON.parse(l)), `not a JSON line: ${l}`).not.toThrow();
        expect(parsed, l).toBeTypeOf('object');
        return parsed as Line;
      });
  return { child, taskQueue, exited, lines, out: () => stdout, err: () => stderr };
}

async function until(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; !check(); await new Promise((r) => setTimeout(r, 100))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}

async function clientFor(taskQueue: string) {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const temporal = new Client({ connection });
  return {
    connection,
    temporal,
    runs: new EnvRunClient({ client: temporal, taskQueue, runDefaults: { awaitRetryMs: 0 } }),
  };
}

it('logs JSON lines: each step started and finished with the run ids, the SDK and Core through the same logger', async () => {
  const w = startWorker('INFO');
  await until(() => w.out().includes('worker on '), 'the worker to start').catch((e: Error) => {
    throw new Error(`${e.message}\n${w.out()}\n${w.err()}`);
  });
  const { connection, temporal, runs } = await clientFor(w.taskQueue);
  const req = runRequest();
  const workflowId = runWorkflowId(req.companyId, req.heartbeatRunId);
  const ready = await runs.startRunAndWaitReady(req);
  await runs.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
  await temporal.workflow.getHandle(workflowId).result();
  const finished = (step: string) => (l: Line) => l.msg === 'step finished' && l.step === step;
  await until(() => w.lines().some(finished('releaseLease')), 'the release to be logged');
  await connection.close();
  w.child.kill('SIGTERM');
  expect(await w.exited).toBe(0);

  const lines = w.lines(); // every line parses
  expect(w.err(), 'nothing is written beside the JSON lines').toBe('');
  for (const l of lines) {
    expect(l).toMatchObject({ name: 'envrun', level: expect.any(String), msg: expect.any(String) });
    expect(Date.parse(l.time as string), JSON.stringify(l)).not.toBeNaN();
  }
  expect(lines.find((l) => String(l.msg).startsWith('worker on '))).toMatchObject({
    level: 'info',
    taskQueue: w.taskQueue,
  });
  expect(lines.filter((l) => l.msg === 'worker stopped')).toHaveLength(1);

  const environmentId = ready.lease.environmentId;
  const leaseId = ready.lease.id;
  const ids = { workflowId, companyId: req.companyId, heartbeatRunId: req.heartbeatRunId };
  const ofRun = lines.filter((l) => l.workflowId === workflowId);
  for (const step of RUN_STEPS) {
    const started = ofRun.filter((l) => l.msg === 'step started' && l.step === step);
    const done = ofRun.filter(finished(step));
    expect(started.length, `${step} started`).toBeGreaterThan(0);
    expect(done.length, `${step} finished`).toBeGreaterThan(0);
    for (const l of [...started, ...done]) {
      expect(l, step).toMatchObject({ ...ids, level: 'info', activityType: step, attempt: expect.any(Number) });
      expect(l.attempt as number).toBeGreaterThanOrEqual(1);
    }
    for (const l of done) {
      expect(l, step).toMatchObject({ environmentId, durationMs: expect.any(Number) });
    }
    // The environment is known from the input of every step but the first (the request names none: the
    // company's local environment is resolved) and the release (which takes the run's ids and lease id).
    if (step !== 'resolveEnvironment' && step !== 'releaseLease') {
      for (const l of started) expect(l, step).toMatchObject({ environmentId });
    }
    if (!['resolveEnvironment', 'acquireLease'].includes(step)) {
      for (const l of [...started, ...done]) expect(l, step).toMatchObject({ leaseId });
    }
  }
  // Temporal's SDK lines are JSON lines too, through the same logger.
  expect(lines.some((l) => l.sdkComponent === 'worker' && l.msg === 'Worker state changed')).toBe(true);
  expect(
    lines.some((l) => l.sdkComponent === 'core'),
    'Core lines are forwarded',
  ).toBe(true);
  // Never a step's input or output: no environment config, no request body, no realization record.
  for (const l of ofRun) {
    for (const key of ['request', 'environment', 'lease', 'config', 'record', 'workspace', 'args', 'result']) {
      expect(l, `${String(l.msg)} logs ${key}`).not.toHaveProperty(key);
    }
  }
});

it('at ENVRUN_LOG_LEVEL=WARN only warnings and errors are logged, a failed step among them', async () => {
  const w = startWorker('WARN');
  const { connection, runs } = await clientFor(w.taskQueue);
  const ok = runRequest();
  await runs.startRunAndWaitReady(ok);
  await runs.completeRun(ok.companyId, ok.heartbeatRunId, { status: 'succeeded' });
  const failing = runRequest({ runtimeOverlay: { provisionCommand: 'exit 9' } });
  await expectRunError(runs.startRunAndWaitReady(failing), 'workspace_realization_failed');
  const failed = (l: Line) => l.msg === 'step failed' && l.step === 'prepareWorkspace';
  await until(() => w.lines().some(failed), 'the failed step to be logged');
  await connection.close();
  w.child.kill('SIGTERM');
  expect(await w.exited).toBe(0);

  const lines = w.lines();
  for (const l of lines) expect(BELOW_WARN, JSON.stringify(l)).not.toContain(l.level);
  expect(lines.find(failed)).toMatchObject({
    level: 'warn',
    workflowId: runWorkflowId(failing.companyId, failing.heartbeatRunId),
    companyId: failing.companyId,
    heartbeatRunId: failing.heartbeatRunId,
    environmentId: expect.any(String),
    attempt: expect.any(Number),
    errorCode: 'workspace_realization_failed',
    errorMessage: expect.stringContaining('exited with code 9'),
  });
});
