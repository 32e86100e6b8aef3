// Durable commands on the production engine (Temporal server on PostgreSQL, two worker hosts): a detached
// command's lines read live from the store, reattach from a sequence number, kill of the process group,
// stdin streamed in, release ending a running command, and a command whose worker host is killed: `lost`.
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { runWorkflowId, type CommandEvent } from '../../contracts/index.js';
import { uniqueId } from '../support/harness.js';
import { killAll, processTree } from '../support/process-tree.js';
import { runRequest, until } from '../support/runs.js';
import { clusterClients, control, type ClusterClients } from './support.js';

let c: ClusterClients;
let killed: number | null = null;
/** Marks in the commands this file starts, to find their processes. */
const tokens: string[] = [];
beforeAll(async () => {
  c = await clusterClients();
});
afterAll(async () => {
  if (killed !== null) await control(`hosts/${killed}/start`); // the cluster whole again for the next file
  // A command whose host was killed keeps running (nothing is left to end it): end what this file started.
  const shells = processTree(1).filter((p) => tokens.some((t) => p.command.includes(t)));
  killAll(processTree(...shells.map((p) => p.pid)));
  await c?.close();
});

async function readyRun(provider: 'shared' | 'fake') {
  const companyId = uniqueId('co');
  const env = await c.admin.createEnvironment({ companyId, name: provider, driver: 'sandbox', config: { provider } });
  const req = runRequest({ companyId, environmentId: env.id });
  const ready = await c.client.startRunAndWaitReady(req);
  return { companyId, runId: req.heartbeatRunId, lease: ready.lease };
}

async function collect(events: AsyncIterable<CommandEvent>) {
  const out: Buffer[] = [];
  const seqs: number[] = [];
  let end: Extract<CommandEvent, { type: 'end' }> | null = null;
  for await (const e of events) {
    if (e.type === 'output') {
      out.push(e.data);
      seqs.push(e.seq);
    } else if (e.type === 'end') end = e;
  }
  return { stdout: Buffer.concat(out).toString(), seqs, end };
}

/** What the journal holds of a command's stdout so far ('' before its step has written its row). */
async function stdoutOf(companyId: string, runId: string, commandId: string): Promise<string> {
  return c.admin.commandOutput(companyId, runId, commandId).then(
    (o) => o.stdout.toString(),
    () => '',
  );
}

it('a detached command is read live through the store, and again from any sequence number', async () => {
  const { companyId, runId } = await readyRun('shared');
  const script = 'for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.5; done';
  const started = await c.client.exec(companyId, runId, {
    command: 'sh',
    args: ['-c', script],
    commandId: 'build',
    wait: false,
  });
  expect(started).toMatchObject({ commandId: 'build', status: 'running' });
  const arrivals: Array<{ line: string; at: number; running: boolean }> = [];
  let end: CommandEvent | null = null;
  for await (const e of c.admin.streamCommand(companyId, runId, 'build')) {
    if (e.type === 'output') {
      const running = (await c.admin.getCommand(companyId, runId, 'build')).status === 'running';
      arrivals.push({ line: e.data.toString(), at: Date.now(), running });
    } else if (e.type === 'end') end = e;
  }
  expect(arrivals.map((a) => a.line).join('')).toBe('line-1\nline-2\nline-3\nline-4\nline-5\nline-6\n');
  // Live: the first lines were read while the command still ran, spread over its run, not all at its end.
  expect(arrivals[0]!.running).toBe(true);
  expect(arrivals.at(-1)!.at - arrivals[0]!.at).toBeGreaterThan(1500);
  expect(end).toMatchObject({ type: 'end', summary: { status: 'exited', exitCode: 0 } });

  const all = await collect(c.admin.streamCommand(companyId, runId, 'build', { follow: false }));
  const after = all.seqs[2]!;
  const from = await collect(c.admin.streamCommand(companyId, runId, 'build', { from: after }));
  expect(from.seqs.length).toBeGreaterThan(0);
  expect(from.seqs.every((s) => s > after)).toBe(true);
  expect(all.stdout.endsWith(from.stdout)).toBe(true);
  expect(from.end?.summary.status).toBe('exited');
  // The same id again waits for that command (ended): it is not run a second time.
  const again = await c.client.exec(companyId, runId, { command: 'sh', args: ['-c', script], commandId: 'build' });
  expect(again).toMatchObject({ status: 'exited', exitCode: 0 });
  expect((await c.client.commands(companyId, runId)).filter((x) => x.commandId === 'build')).toHaveLength(1);
  await c.client.completeRun(companyId, runId, { status: 'succeeded' });
});

it('kill ends the whole process group; stdin streams in while the command runs', async () => {
  const { companyId, runId } = await readyRun('shared');
  await c.client.exec(companyId, runId, {
    command: 'sh',
    args: ['-c', 'sleep 600 & echo $! > child; echo ready; wait'],
    commandId: 'k',
    wait: false,
  });
  await until('the command to be ready', async () => (await stdoutOf(companyId, runId, 'k')) === 'ready\n');
  const child = (await c.client.exec(companyId, runId, { command: 'cat', args: ['child'] })).stdout.trim();
  expect(child).toMatch(/^\d+$/);
  expect(existsSync(`/proc/${child}`)).toBe(true);
  await c.admin.killCommand(companyId, runId, 'k');
  const killedOutcome = await c.client.exec(companyId, runId, { command: 'true', commandId: 'k' });
  expect(killedOutcome).toMatchObject({ status: 'killed', signal: 'SIGTERM' });
  // The background child was in the group too.
  await until('the background child to end', async () => {
    const stat = existsSync(`/proc/${child}/stat`) ? readFileSync(`/proc/${child}/stat`, 'utf8') : '';
    return !stat || / Z /.test(stat.slice(stat.lastIndexOf(')')));
  });

  await c.client.exec(companyId, runId, {
    command: 'sh',
    args: ['-c', 'while read -r l; do echo got-$l; done; echo eof'],
    commandId: 'in',
    stdinStream: true,
    wait: false,
  });
  const stdin = await c.admin.openStdin(companyId, runId, 'in');
  const write = (text: string) =>
    new Promise<void>((resolve, reject) => stdin.write(text, (err) => (err ? reject(err) : resolve())));
  await write('a\n');
  await until('the first line answered', async () => (await stdoutOf(companyId, runId, 'in')) === 'got-a\n');
  expect((await c.admin.getCommand(companyId, runId, 'in')).status).toBe('running');
  await write('b\n');
  await new Promise<void>((resolve) => stdin.end(resolve));
  const summed = await c.client.exec(companyId, runId, { command: 'true', commandId: 'in' });
  expect(summed).toMatchObject({ status: 'exited', exitCode: 0 });
  expect(await stdoutOf(companyId, runId, 'in')).toBe('got-a\ngot-b\neof\n');
  await c.client.completeRun(companyId, runId, { status: 'succeeded' });
});

it('release ends a running command: killed_by_release, and its readers see the end', async () => {
  const { companyId, runId } = await readyRun('shared');
  await c.client.exec(companyId, runId, {
    command: 'sh',
    args: ['-c', 'echo started; exec sleep 300'],
    commandId: 'long',
    wait: false,
  });
  await until('the command to start', async () => (await stdoutOf(companyId, runId, 'long')) === 'started\n');
  const reader = collect(c.admin.streamCommand(companyId, runId, 'long'));
  expect((await c.client.completeRun(companyId, runId, { status: 'succeeded' })).phase).toBe('released');
  await c.client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).result();
  expect(await c.admin.getCommand(companyId, runId, 'long')).toMatchObject({ status: 'killed_by_release' });
  const read = await reader;
  expect(read.stdout).toBe('started\n');
  expect(read.end?.summary.status).toBe('killed_by_release');
});

it('kill -9 the host running a command: it is lost, never run again; its journal keeps what it wrote', async () => {
  // The fake provider's sandboxes are bound to the host that made them: the command runs on that host.
  const { companyId, runId, lease } = await readyRun('fake');
  const hosts = inject('cluster').hosts;
  const victim = hosts.findIndex((h) => h.id === lease.metadata?.hostId);
  expect(victim, `the lease's host ${String(lease.metadata?.hostId)}`).toBeGreaterThanOrEqual(0);
  const token = uniqueId('lost-command');
  tokens.push(token);
  const script = `echo run >> ran; echo before-the-kill; sleep 600; echo ${token}`;
  const request = { command: 'sh', args: ['-c', script], commandId: 'doomed' };
  await c.client.exec(companyId, runId, { ...request, wait: false });
  await until(
    'the line in the journal',
    async () => (await stdoutOf(companyId, runId, 'doomed')) === 'before-the-kill\n',
  );

  await control(`hosts/${victim}/kill`);
  killed = victim;
  await control(`hosts/${victim}/start`); // the same host again (same id and data folder): the sandbox is there
  killed = null;
  // Starting the same id again waits for that command: its step stops heartbeating (30 s) and it is lost.
  const outcome = await c.client.exec(companyId, runId, request);
  expect(outcome).toMatchObject({ commandId: 'doomed', status: 'lost', exitCode: null });
  expect(await c.admin.getCommand(companyId, runId, 'doomed')).toMatchObject({
    status: 'lost',
    error: expect.stringMatching(/.+/),
  });
  const read = await collect(c.admin.streamCommand(companyId, runId, 'doomed'));
  expect(read.stdout).toBe('before-the-kill\n');
  expect(read.end?.summary.status).toBe('lost');
  const runs = await c.client.exec(companyId, runId, { command: 'sh', args: ['-c', 'wc -l < ran'] });
  expect(runs.stdout.trim()).toBe('1');
  await c.client.completeRun(companyId, runId, { status: 'succeeded' });
}, 240_000);
