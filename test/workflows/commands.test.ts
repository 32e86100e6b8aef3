// Durable commands on the dev server: a command's output goes to the journal in the store (bytes, in order,
// per stream), its outcome through the run carries only a bounded tail, and its history holds no output.
// Detach and reattach from any point, one command per id, kill, stdin, timeout, and release ending a command.
import { createHash, randomBytes } from 'node:crypto';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runWorkflowId, type CommandEvent } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { decodedHistory } from '../support/history.js';
import { runEnd, runRequest, until } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readyRun(): Promise<{ companyId: string; runId: string }> {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'f',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const req = runRequest({ companyId, environmentId: env.id });
  await h.client.startRunAndWaitReady(req);
  return { companyId, runId: req.heartbeatRunId };
}

async function collect(events: AsyncIterable<CommandEvent>) {
  const parts = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const seqs: number[] = [];
  let end: Extract<CommandEvent, { type: 'end' }> | null = null;
  let truncated = false;
  for await (const e of events) {
    if (e.type === 'output') {
      parts[e.stream].push(e.data);
      seqs.push(e.seq);
    } else if (e.type === 'truncated') truncated = true;
    else end = e;
  }
  return { stdout: Buffer.concat(parts.stdout), stderr: Buffer.concat(parts.stderr), seqs, end, truncated };
}

/** What the journal holds of a command's stdout so far ('' before its step has written its row). */
async function stdoutOf(companyId: string, runId: string, commandId: string): Promise<string> {
  return h.admin.commandOutput(companyId, runId, commandId).then(
    (out) => out.stdout.toString(),
    () => '',
  );
}

async function historyText(companyId: string, runId: string): Promise<string> {
  return decodedHistory(await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).fetchHistory());
}

describe('durable commands', () => {
  it('1.5 MB on each stream: the command ends, the journal holds every byte, history none of it', async () => {
    const { companyId, runId } = await readyRun();
    // The arguments are in history; the marker is not in them as it is in the output (split by quotes).
    const script = "yes 'a-mar''ker-line' | head -c 1500000; yes 'b-mar''ker-line' | head -c 1500000 >&2";
    const outcome = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', script], tailBytes: 0 });
    expect(outcome).toMatchObject({ status: 'exited', exitCode: 0, stdoutBytes: 1_500_000, stderrBytes: 1_500_000 });
    expect(outcome.stdout).toBe('');
    const got = await collect(h.admin.streamCommand(companyId, runId, outcome.commandId));
    expect(got.stdout.length).toBe(1_500_000);
    expect(got.stderr.length).toBe(1_500_000);
    expect(got.stdout.subarray(0, 14).toString()).toBe('a-marker-line\n');
    expect(got.stderr.subarray(0, 14).toString()).toBe('b-marker-line\n');
    expect(got.end?.summary.status).toBe('exited');
    // Sequence numbers are 1, 2, 3… in the order written, across both streams.
    expect(got.seqs[0]).toBe(1);
    const history = await historyText(companyId, runId);
    expect(history).not.toContain('marker-line');
    expect(history.length).toBeLessThan(100_000);
    // The default answer carries a tail of 4096 bytes a stream: bounded, whatever the output.
    const again = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', script] });
    expect(again.stdout.length).toBe(4096);
    expect(again.stderr.length).toBe(4096);
    // That tail is all the history holds (and the search above does see what history holds).
    const after = await historyText(companyId, runId);
    expect(after).toContain('marker-line');
    expect(after.length - history.length).toBeLessThan(60_000);
    expect(again.stdout.endsWith('a-marker-line\n'.slice(0, 1_500_000 % 14))).toBe(true);
  });

  it('1.5 MB of random bytes on each stream, and output without a final newline, arrive byte for byte', async () => {
    const { companyId, runId } = await readyRun();
    // The command keeps copies of what it wrote (tee), to compare the journal against.
    const outcome = await h.client.exec(companyId, runId, {
      command: 'sh',
      args: [
        '-c',
        'head -c 1500000 /dev/urandom | tee out.bin; head -c 1500000 /dev/urandom | tee err.bin >&2; printf no-newline',
      ],
    });
    expect(outcome.status).toBe('exited');
    const got = await collect(h.admin.streamCommand(companyId, runId, outcome.commandId));
    const files = await h.admin.commandOutput(companyId, runId, outcome.commandId);
    expect(got.stdout.length).toBe(1_500_000 + 'no-newline'.length);
    expect(got.stdout.subarray(-10).toString()).toBe('no-newline');
    const check = await h.client.exec(companyId, runId, {
      command: 'sh',
      args: ['-c', 'sha256sum out.bin err.bin'],
    });
    const [outSum, errSum] = check.stdout.split('\n').map((l) => l.split(' ')[0]);
    expect(sha(got.stdout.subarray(0, 1_500_000))).toBe(outSum);
    expect(sha(got.stderr)).toBe(errSum);
    expect(sha(files.stderr)).toBe(errSum);
    // The tail is text: random bytes are not UTF-8, and the answer says so.
    expect(outcome.outputLossy).toBe(true);
  });

  it('detached: answers at once; a reader follows it live and from any point; the same id twice is one command', async () => {
    const { companyId, runId } = await readyRun();
    const script = 'echo run >> runs.log; for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done';
    const started = await h.client.exec(companyId, runId, {
      command: 'sh',
      args: ['-c', script],
      commandId: 'build-1',
      wait: false,
    });
    expect(started).toMatchObject({ commandId: 'build-1', status: 'running', stdout: '' });
    const live: string[] = [];
    const follow = (async () => {
      for await (const e of h.admin.streamCommand(companyId, runId, 'build-1')) {
        if (e.type === 'output') live.push(e.data.toString());
        if (e.type === 'end') return e.summary;
      }
      return null;
    })();
    await until('a line to arrive while the command runs', async () => live.join('').includes('line-1'));
    const summaryWhileRunning = await h.admin.getCommand(companyId, runId, 'build-1');
    expect(summaryWhileRunning.status).toBe('running');
    // The same id again (a client that lost its answer): the same command, waited for, not run again.
    const second = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', script], commandId: 'build-1' });
    expect(second).toMatchObject({ commandId: 'build-1', status: 'exited', exitCode: 0 });
    const ended = await follow;
    expect(ended?.status).toBe('exited');
    expect(live.join('')).toBe('line-1\nline-2\nline-3\nline-4\nline-5\n');
    const count = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', 'wc -l < runs.log'] });
    expect(count.stdout.trim()).toBe('1');
    // Reattach from a sequence number: only what came after it.
    const all = await collect(h.admin.streamCommand(companyId, runId, 'build-1', { follow: false }));
    const from = await collect(h.admin.streamCommand(companyId, runId, 'build-1', { from: all.seqs[1]! }));
    expect(from.seqs.every((s) => s > all.seqs[1]!)).toBe(true);
    expect(
      Buffer.concat([all.stdout.subarray(0, all.stdout.length - from.stdout.length), from.stdout]).toString(),
    ).toBe(all.stdout.toString());
    // The run's workflow lists its commands (summaries only).
    const listed = await h.client.commands(companyId, runId);
    expect(listed.find((c) => c.commandId === 'build-1')).toMatchObject({ status: 'exited', exitCode: 0 });
  });

  it('kill signals the whole process group; stdin streams in; a timeout ends it timed_out', async () => {
    const { companyId, runId } = await readyRun();
    await h.client.exec(companyId, runId, {
      command: 'sh',
      args: ['-c', 'trap "echo got-usr1; exit 7" USR1; echo ready; sleep 60 & wait'],
      commandId: 'k1',
      wait: false,
    });
    await until('the command to be ready', async () => (await stdoutOf(companyId, runId, 'k1')).includes('ready'));
    await h.admin.killCommand(companyId, runId, 'k1', 'USR1');
    const killed = await h.client.exec(companyId, runId, { command: 'true', commandId: 'k1' });
    expect(killed).toMatchObject({ status: 'killed', exitCode: 7, stdout: '' }); // started detached: no tail
    expect(await stdoutOf(companyId, runId, 'k1')).toBe('ready\ngot-usr1\n');

    await h.client.exec(companyId, runId, { command: 'sha256sum', commandId: 'in1', stdinStream: true, wait: false });
    const stdin = await h.admin.openStdin(companyId, runId, 'in1');
    const input = randomBytes(300_000);
    await new Promise<void>((resolve, reject) => {
      stdin.write(input.subarray(0, 100_000));
      stdin.write(input.subarray(100_000, 200_000));
      stdin.end(input.subarray(200_000), () => resolve());
      stdin.on('error', reject);
    });
    const summed = await h.client.exec(companyId, runId, { command: 'true', commandId: 'in1' });
    expect(summed).toMatchObject({ status: 'exited', exitCode: 0 });
    expect((await stdoutOf(companyId, runId, 'in1')).split(' ')[0]).toBe(sha(input));

    const slow = await h.client.exec(companyId, runId, { command: 'sleep', args: ['30'], timeoutMs: 500 });
    expect(slow).toMatchObject({ status: 'timed_out', timedOut: true });
  });

  it('release ends a running command: killed_by_release in the store; the history replays', async () => {
    const { companyId, runId } = await readyRun();
    await h.client.exec(companyId, runId, {
      command: 'sh',
      args: ['-c', 'echo started; exec sleep 120'],
      commandId: 'long',
      wait: false,
    });
    await until('the command to start', async () => (await stdoutOf(companyId, runId, 'long')).includes('started'));
    await h.client.completeRun(companyId, runId, { status: 'succeeded' });
    await runEnd(h, companyId, runId);
    const summary = await h.admin.getCommand(companyId, runId, 'long');
    expect(summary.status).toBe('killed_by_release');
    const history = await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).fetchHistory();
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundle') }, replayName: 'durable-commands' },
      history,
    );
  });
  it("another company cannot read a command; a company's journals share one budget", async () => {
    const { companyId, runId } = await readyRun();
    const first = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', 'head -c 300000 /dev/zero'] });
    expect(first.stdoutBytes).toBe(300_000);
    // The same run id and command id under another company: nothing.
    await expect(h.admin.getCommand(uniqueId('other'), runId, first.commandId)).rejects.toThrow(/not found/);
    await expect(h.admin.commandOutput(uniqueId('other'), runId, first.commandId)).rejects.toThrow(/not found/);
    // The company has 300,000 bytes kept; a budget of 400,000 leaves 100,000 for the next command.
    process.env.ENVRUN_MAX_COMPANY_COMMAND_OUTPUT_BYTES = '400000';
    try {
      const second = await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', 'head -c 250000 /dev/zero'] });
      expect(second).toMatchObject({ status: 'exited', stdoutBytes: 250_000, truncated: true });
      const kept = await collect(h.admin.streamCommand(companyId, runId, second.commandId));
      expect(kept.stdout.length).toBe(100_000);
      expect(kept.truncated).toBe(true);
    } finally {
      delete process.env.ENVRUN_MAX_COMPANY_COMMAND_OUTPUT_BYTES;
    }
  });
  it('100 MB through one command, and a million short lines as fast as seq prints them: every byte, in order', async () => {
    const { companyId, runId } = await readyRun();
    const big = await h.client.exec(companyId, runId, {
      command: 'sh',
      args: ['-c', "head -c 100000000 /dev/zero | tr '\\0' y"],
      timeoutMs: 300_000,
    });
    expect(big).toMatchObject({ status: 'exited', exitCode: 0, stdoutBytes: 100_000_000, truncated: false });
    const digest = createHash('sha256');
    let bytes = 0;
    for await (const e of h.admin.streamCommand(companyId, runId, big.commandId, { follow: false })) {
      if (e.type !== 'output') continue;
      digest.update(e.data);
      bytes += e.data.length;
    }
    expect(bytes).toBe(100_000_000);
    expect(digest.digest('hex')).toBe(sha(Buffer.alloc(100_000_000, 'y')));

    const lines = await h.client.exec(companyId, runId, { command: 'seq', args: ['1', '1000000'] });
    expect(lines).toMatchObject({ status: 'exited', exitCode: 0 });
    const got = await collect(h.admin.streamCommand(companyId, runId, lines.commandId));
    const text = got.stdout.toString();
    expect(text.length).toBe(lines.stdoutBytes);
    const all = text.split('\n');
    expect(all.length).toBe(1_000_001);
    expect(all[0]).toBe('1');
    expect(all[999_999]).toBe('1000000');
    expect(all.every((l, i) => i === 1_000_000 || l === String(i + 1))).toBe(true);
  }, 300_000);
  it('50 commands streaming at once (5 in each of 10 runs): every line of each reaches its reader, in order', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'f',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const runs: string[] = [];
    for (let i = 0; i < 10; i++) {
      const req = runRequest({ companyId, environmentId: env.id });
      await h.client.startRunAndWaitReady(req);
      runs.push(req.heartbeatRunId);
    }
    const script = 'for i in $(seq 1 60); do echo line-$i; sleep 0.04; done';
    const read = await Promise.all(
      runs.flatMap((runId) =>
        [1, 2, 3, 4, 5].map(async (n) => {
          const commandId = `c${n}`;
          await h.client.exec(companyId, runId, { command: 'sh', args: ['-c', script], commandId, wait: false });
          const got = await collect(h.admin.streamCommand(companyId, runId, commandId));
          return { text: got.stdout.toString(), status: got.end?.summary.status };
        }),
      ),
    );
    const expected = Array.from({ length: 60 }, (_, i) => `line-${i + 1}\n`).join('');
    expect(read.filter((r) => r.text !== expected || r.status !== 'exited')).toEqual([]);
  }, 120_000);
});
