// Durable commands through the `envrun` binary, against the dev server, a real worker and PostgreSQL: `run
// exec` streams bytes as the command writes them and exits with its status, `--detach` and `run logs`
// reattach from any point (also after the CLI was killed), `run kill`, `--stdin`, `run commands`.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cliEnv } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';

let h: Harness;
let companyId: string;
let runId: string;

beforeAll(async () => {
  h = await createHarness();
  companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'f',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const request = runRequest({ companyId, environmentId: env.id });
  await h.client.startRunAndWaitReady(request);
  runId = request.heartbeatRunId;
});
afterAll(async () => {
  await h?.close();
});

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

interface Cli {
  child: ChildProcess;
  /** What it printed so far. */
  out(): Buffer;
  err(): Buffer;
  done: Promise<Ended>;
}

/** The binary, its output kept as bytes (execFile's buffer would cut a 1.5 MB output); `input` is its stdin. */
function cli(args: string[], input = ''): Cli {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: cliEnv(h),
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  child.stdin.end(input);
  const done = new Promise<Ended>((resolve) =>
    child.on('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }),
    ),
  );
  return { child, out: () => Buffer.concat(out), err: () => Buffer.concat(err), done };
}

const run = (...args: string[]) => ['run', ...args, '--company', companyId, '--run', runId];
const exec = (...args: string[]) => cli([...run('exec'), ...args]).done;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const repeat = (line: string, bytes: number) => line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes);

describe('bad input: exit 2, naming the option, nothing started', () => {
  it.each([
    [['run', 'exec', '--company', 'c', '--run', 'r', '--command-id', 'a b', '--', 'true'], /--command-id: /],
    [
      ['run', 'exec', '--company', 'c', '--run', 'r', '--stdin', '--detach', '--', 'true'],
      /--stdin: not with --detach/,
    ],
    [['run', 'logs', '--company', 'c', '--run', 'r', '--from', 'x'], /--from: must be a non-negative integer/],
    [['run', 'logs', '--company', 'c', '--run', 'r', '--from=-1'], /--from: must be a non-negative integer/],
    [['run', 'logs', 'a/b', '--company', 'c', '--run', 'r'], /id: /],
    [
      ['run', 'kill', 'x1', '--company', 'c', '--run', 'r', '--signal', 'NOPE'],
      /--signal: "NOPE" is not a signal name/,
    ],
    [['run', 'kill', 'x1', '--company', 'c', '--run', 'r', '--signal', '9'], /--signal: "9" is not a signal name/],
    [['run', 'commands', '--company', 'c', '--run', 'a b'], /--run/],
  ])('%j', async (args, message) => {
    const res = await cli(args as string[]).done;
    expect(res.code, res.stderr.toString()).toBe(2);
    expect(res.stderr.toString()).toMatch(message as RegExp);
    expect(res.stdout.toString()).toBe('');
  });
});

describe('run exec streams the output and exits with the status', () => {
  it("the issue's two failures print their output: 1.5 MB of text, then of random bytes, on each stream", async () => {
    const text = await exec(
      '--',
      'sh',
      '-c',
      "yes 'a-marker-line' | head -c 1500000; yes 'b-marker-line' | head -c 1500000 >&2",
    );
    expect(text.code, text.stderr.subarray(-500).toString()).toBe(0);
    expect(text.stdout.length).toBe(1_500_000);
    expect(text.stdout.toString()).toBe(repeat('a-marker-line\n', 1_500_000));
    expect(text.stderr.toString()).toContain(repeat('b-marker-line\n', 1_500_000));

    const random = await exec(
      '--',
      'sh',
      '-c',
      'head -c 1500000 /dev/urandom | tee out.bin; head -c 1500000 /dev/urandom | tee err.bin >&2',
    );
    expect(random.code, random.stderr.subarray(-500).toString()).toBe(0);
    expect(random.stdout.length).toBe(1_500_000);
    expect(random.stderr.length).toBe(1_500_000);
    const sums = await exec('--', 'sha256sum', 'out.bin', 'err.bin');
    expect(sums.code).toBe(0);
    expect(sums.stdout.toString()).toBe(`${sha(random.stdout)}  out.bin\n${sha(random.stderr)}  err.bin\n`);
  }, 180_000);

  it('exit codes: the exit code, 137 when killed by run kill --signal KILL, 124 timed out; --json events', async () => {
    expect((await exec('--', 'sh', '-c', 'exit 3')).code).toBe(3);

    const following = cli([...run('exec'), '--command-id', 'to-kill', '--', 'sh', '-c', 'echo started; sleep 300']);
    await until('the command started', async () => following.out().toString() === 'started\n', 30_000);
    const kill = await cli([...run('kill', 'to-kill'), '--signal', 'KILL']).done;
    expect(kill.code, kill.stderr.toString()).toBe(0);
    expect(kill.stdout.toString()).toBe('to-kill\tSIGKILL sent\n');
    const killed = await following.done;
    expect(killed.code, killed.stderr.toString()).toBe(137);
    // A command that ended cannot be killed again.
    const again = await cli([...run('kill', 'to-kill')]).done;
    expect(again.code).not.toBe(0);
    expect(again.stderr.toString()).toContain('to-kill is killed, not running');

    const timedOut = await exec('--timeout', '1000', '--', 'sleep', '30');
    expect(timedOut.code).toBe(124);
    expect(timedOut.stderr.toString()).toMatch(/^envrun: command \S+ timed out$/m);

    const json = await exec(
      '--json',
      '--command-id',
      'as-json',
      '--',
      'sh',
      '-c',
      'printf out; printf err >&2; exit 4',
    );
    expect(json.code).toBe(4);
    const events = json.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toEqual({ type: 'started', commandId: 'as-json' });
    const output = events.filter((e) => e.type === 'output');
    const bytes = (stream: string) =>
      Buffer.concat(output.filter((e) => e.stream === stream).map((e) => Buffer.from(e.data as string, 'base64')));
    expect(bytes('stdout').toString()).toBe('out');
    expect(bytes('stderr').toString()).toBe('err');
    expect(output.every((e) => typeof e.seq === 'number')).toBe(true);
    expect(events.at(-1)).toMatchObject({
      type: 'end',
      summary: { commandId: 'as-json', status: 'exited', exitCode: 4 },
    });
  }, 180_000);

  it("output past the journal's limit: a notice on stderr, from run exec and from run logs", async () => {
    // The worker (this process) reads the limit when a command starts.
    process.env.ENVRUN_MAX_COMMAND_OUTPUT_BYTES = '1000';
    let capped: Ended;
    try {
      capped = await exec('--command-id', 'capped', '--', 'sh', '-c', "head -c 5000 /dev/zero | tr '\\0' x");
    } finally {
      delete process.env.ENVRUN_MAX_COMMAND_OUTPUT_BYTES;
    }
    expect(capped.code, capped.stderr.toString()).toBe(0);
    expect(capped.stdout.length).toBeLessThanOrEqual(1000);
    expect(capped.stdout.toString()).toMatch(/^x*$/);
    const notice =
      "envrun: command capped: its output reached the journal's limit; what it wrote past it was not kept\n";
    expect(capped.stderr.toString()).toBe(notice);
    const logged = await cli(run('logs', 'capped')).done;
    expect(logged.stdout).toEqual(capped.stdout);
    expect(logged.stderr.toString()).toBe(notice);
  }, 60_000);
});

describe('reattaching', () => {
  it('--detach prints the id; run logs --follow from another process gets the rest; --from gives only later chunks', async () => {
    const detached = await exec('--detach', '--', 'sh', '-c', 'echo one; sleep 3; echo two; exit 6');
    expect(detached.code, detached.stderr.toString()).toBe(0);
    const id = detached.stdout.toString().trim().split('\n').at(-1)!;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const followed = await cli([...run('logs', id), '--follow']).done;
    expect(followed.code, followed.stderr.toString()).toBe(6);
    expect(followed.stdout.toString()).toBe('one\ntwo\n');

    // The journal's chunks, numbered: from the first one's number on, only what came after it.
    const logged = await cli([...run('logs', id), '--json']).done;
    const chunks = logged.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; seq: number; data: string });
    const outputs = chunks.filter((c) => c.type === 'output');
    expect(outputs.length).toBeGreaterThanOrEqual(2);
    expect(Buffer.from(outputs[0]!.data, 'base64').toString()).toBe('one\n');
    const later = await cli([...run('logs', id), '--from', String(outputs[0]!.seq)]).done;
    expect(later.code).toBe(6);
    expect(later.stdout.toString()).toBe('two\n');
    // No id: the run's latest command.
    const latest = await cli(run('logs')).done;
    expect(latest.stdout.toString()).toBe('one\ntwo\n');
    expect(latest.code).toBe(6);
  }, 120_000);

  it('a CLI killed while following, or stopped with Ctrl-C: the command goes on, run logs --follow has all of it', async () => {
    const script = (n: number) => `echo first; sleep 4; echo second; exit ${n}`;
    const crashed = cli([...run('exec'), '--command-id', 'outlives-cli', '--', 'sh', '-c', script(5)]);
    await until('the first line', async () => crashed.out().toString() === 'first\n', 30_000);
    crashed.child.kill('SIGKILL');
    expect((await crashed.done).signal).toBe('SIGKILL');
    const rest = await cli([...run('logs', 'outlives-cli'), '--follow']).done;
    expect(rest.stdout.toString()).toBe('first\nsecond\n');
    expect(rest.code).toBe(5);

    const interrupted = cli([...run('exec'), '--command-id', 'outlives-ctrl-c', '--', 'sh', '-c', script(7)]);
    await until('the first line', async () => interrupted.out().toString() === 'first\n', 30_000);
    interrupted.child.kill('SIGINT');
    const stopped = await interrupted.done;
    expect(stopped.code).toBe(130);
    expect(stopped.stderr.toString()).toContain(
      `envrun run logs --company ${companyId} --run ${runId} outlives-ctrl-c --follow`,
    );
    expect(stopped.stderr.toString()).toContain(
      `envrun run kill --company ${companyId} --run ${runId} outlives-ctrl-c`,
    );
    const after = await cli([...run('logs', 'outlives-ctrl-c'), '--follow']).done;
    expect(after.stdout.toString()).toBe('first\nsecond\n');
    expect(after.code).toBe(7);
  }, 120_000);
});

describe('stdin and the run commands list', () => {
  it('--stdin pipes this process stdin into the command', async () => {
    const sorted = await cli([...run('exec'), '--stdin', '--command-id', 'sorter', '--', 'sort'], 'world\nhello\n')
      .done;
    expect(sorted.code, sorted.stderr.toString()).toBe(0);
    expect(sorted.stdout.toString()).toBe('hello\nworld\n');
  }, 60_000);

  it('run commands lists the commands of the run, from the store', async () => {
    const listed = await cli([...run('commands'), '--json']).done;
    expect(listed.code, listed.stderr.toString()).toBe(0);
    const commands = JSON.parse(listed.stdout.toString()) as Array<Record<string, unknown>>;
    const byId = new Map(commands.map((c) => [c.commandId, c]));
    expect(byId.get('to-kill')).toMatchObject({ status: 'killed', signal: 'SIGKILL', exitCode: null });
    expect(byId.get('as-json')).toMatchObject({ status: 'exited', exitCode: 4, stdoutBytes: 3, stderrBytes: 3 });
    expect(byId.get('sorter')).toMatchObject({ status: 'exited', exitCode: 0, stdoutBytes: 12 });
    expect(commands.length).toBe(12); // every exec above

    const text = await cli(run('commands')).done;
    const lines = text.stdout.toString().trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+EXIT\s+STDOUT\s+STDERR\s+STARTED\s+DURATION$/);
    expect(lines.find((l) => l.startsWith('to-kill '))).toMatch(/^to-kill\s+killed\s+SIGKILL\s+/);
    expect(lines.find((l) => l.startsWith('as-json '))).toMatch(/^as-json\s+exited\s+4\s+3 B\s+3 B\s+\S+\s+\S+$/);
    expect(lines).toHaveLength(13);
  }, 60_000);
});
