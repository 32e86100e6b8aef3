// Fault: the worker running a command is killed (SIGKILL). The command is marked `lost` once its step stops
// heartbeating, it is never run again (not by a retry, not by a second start of its id), its journal keeps
// what it wrote before the kill, and the client and the stream say it was lost.
import { Client, Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import type { CommandEvent } from '../../contracts/index.js';
import { createDrivers } from '../../drivers/registry.js';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { Store } from '../../store/store.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { createProviders } from '../../drivers/providers/load.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { killAll, processTree, type ProcessInfo } from '../support/process-tree.js';
import { runRequest, tempWorkspace, until } from '../support/runs.js';

const MAIN = fileURLToPath(new URL('../../worker/main.ts', import.meta.url));
let db: Awaited<ReturnType<typeof freshDatabase>>;
const workers: ChildProcess[] = [];
const started: ProcessInfo[] = [];
beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
  killAll(started);
  await db?.close();
});

function startWorker(env: Record<string, string>): { child: ChildProcess; ready: Promise<void> } {
  const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), MAIN], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env },
  });
  workers.push(child);
  let out = '';
  const ready = new Promise<void>((resolve) =>
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('worker on ')) resolve();
    }),
  );
  child.stderr!.resume();
  return { child, ready };
}

it('kill -9 mid-command: the command is lost, not run again, and its journal keeps what it wrote', async () => {
  const taskQueue = uniqueId('lost');
  const dataDir = join(inject('tmpRoot'), taskQueue);
  const env = {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: db.url,
    ENVRUN_TASK_QUEUE: taskQueue,
    ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
    ENVRUN_LOG_LEVEL: 'INFO', // the start line is an info line
    ENVRUN_REAPER_EVERY: 'off',
    ENVRUN_DATA_DIR: dataDir,
  };
  const first = startWorker(env);
  await first.ready;
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const store = new Store(db.db);
  const client = new EnvRunClient({ client: new Client({ connection }), taskQueue, runDefaults: { awaitRetryMs: 0 } });
  const admin = new EnvRunAdmin({ runs: client, store, drivers: createDrivers(createProviders({ dataDir })) });
  try {
    const companyId = uniqueId('co');
    const sandboxEnv = await admin.createEnvironment({
      companyId,
      name: 'fake',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({ companyId, environmentId: sandboxEnv.id });
    const runId = req.heartbeatRunId;
    await client.startRunAndWaitReady(req);

    // Each time the command runs it appends a line to `ran`; then it prints a line and sleeps.
    const ran = join(tempWorkspace(), 'ran');
    const token = uniqueId('lost-command');
    const script = `echo run >> "$1"; echo before-the-kill; sleep 600; echo ${token}`;
    const request = { command: 'sh', args: ['-c', script, 'sh', ran], commandId: 'long' };
    const detached = await client.exec(companyId, runId, { ...request, wait: false });
    expect(detached).toMatchObject({ commandId: 'long', status: 'running' });
    await until('the line in the journal', async () =>
      admin.commandOutput(companyId, runId, 'long').then(
        (o) => o.stdout.toString() === 'before-the-kill\n',
        () => false,
      ),
    );
    const shell = processTree(first.child.pid!).filter((p) => p.command.includes(token));
    expect(shell).toHaveLength(1); // the command's shell, under the worker
    started.push(...processTree(shell[0]!.pid));

    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const second = startWorker(env);
    await second.ready;

    // Starting the same id again waits for that command: its step stops heartbeating (30 s) and it is lost.
    const outcome = await client.exec(companyId, runId, request);
    expect(outcome).toMatchObject({ commandId: 'long', status: 'lost', exitCode: null });
    expect(outcome.error).toMatch(/stopped/);
    expect(readFileSync(ran, 'utf8')).toBe('run\n'); // ran once
    expect(await admin.getCommand(companyId, runId, 'long')).toMatchObject({
      status: 'lost',
      error: expect.stringMatching(/.+/),
    });
    expect((await client.commands(companyId, runId)).find((c) => c.commandId === 'long')).toMatchObject({
      status: 'lost',
    });
    const events: CommandEvent[] = [];
    for await (const e of admin.streamCommand(companyId, runId, 'long')) events.push(e);
    expect(events.map((e) => (e.type === 'output' ? `${e.stream}:${e.data.toString()}` : e.type))).toEqual([
      'stdout:before-the-kill\n',
      'end',
    ]);
    expect(events.at(-1)).toMatchObject({ type: 'end', summary: { status: 'lost' } });

    // The run is still usable: a new command runs on the new worker; release ends the run cleanly.
    const next = await client.exec(companyId, runId, { command: 'sh', args: ['-c', 'echo after'] });
    expect(next).toMatchObject({ status: 'exited', exitCode: 0, stdout: 'after\n' });
    await client.completeRun(companyId, runId, { status: 'succeeded' });
    expect(readFileSync(ran, 'utf8')).toBe('run\n');
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  } finally {
    await connection.close();
  }
}, 180_000);
