// Fault: the worker running a command is killed (SIGKILL). The command is marked `lost` once its step stops
// heartbeating, it is never run again (not by a retry, not by a second start of its id), its journal keeps
// what it wrote before the kill, and the client and the stream say it was lost.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runWorkflowId, type CommandEvent } from '../../contracts/index.js';
import { decodedHistory } from '../support/history.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { killAll, processTree, type ProcessInfo } from '../support/process-tree.js';
import { runRequest, tempWorkspace, until } from '../support/runs.js';
import { startWorkerProcess, workerSetup } from '../support/worker-process.js';

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

it('kill -9 mid-command: the command is lost, not run again, and its journal keeps what it wrote', async () => {
  const { env, client, admin, close } = await workerSetup(db, uniqueId('lost'));
  const first = startWorkerProcess(env, workers);
  await first.ready;
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
    // (The line is split by quotes in the script: the arguments are in history, the output must not be.)
    const script = `echo run >> "$1"; echo before-the-""kill; sleep 600; echo ${token}`;
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
    const second = startWorkerProcess(env, workers);
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
    // The step timed out: its last heartbeat's details are in the history, and they hold no output.
    const history = decodedHistory(
      await client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).fetchHistory(),
    );
    expect(history).toContain('activityTaskTimedOutEventAttributes');
    expect(history).not.toContain('before-the-kill');

    // The run is still usable: a new command runs on the new worker; release ends the run cleanly.
    const next = await client.exec(companyId, runId, { command: 'sh', args: ['-c', 'echo after'] });
    expect(next).toMatchObject({ status: 'exited', exitCode: 0, stdout: 'after\n' });
    await client.completeRun(companyId, runId, { status: 'succeeded' });
    expect(readFileSync(ran, 'utf8')).toBe('run\n');
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  } finally {
    await close();
  }
}, 180_000);
