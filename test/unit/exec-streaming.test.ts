// Streaming exec (the driver contract's onOutput, stdinStream and onStarted) on every path that runs a
// command on this host: runProcess itself, the local driver, the fake provider behind the reply check, a
// real bubblewrap sandbox and a real sshd. Output arrives byte for byte with nothing kept, stdin is fed as
// it comes, and a signal reaches the command's whole process group.
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server, utils as sshUtils, type Connection, type ServerChannel } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Environment, ExecResult } from '../../contracts/index.js';
import { createLocalDriver } from '../../drivers/local.js';
import { runProcess } from '../../drivers/process.js';
import { checkedProvider } from '../../drivers/providers/checked.js';
import type { CommandControl, ProviderExecRequest } from '../../drivers/providers/contract.js';
import { createFakeProvider } from '../../drivers/providers/fake.js';
import type { PluginWorkerLike } from '../../drivers/providers/paperclip/calls.js';
import { createPaperclipProvider } from '../../drivers/providers/paperclip/provider.js';
import { createSshDriver } from '../../drivers/ssh/index.js';
import {
  callContext,
  hasBwrap,
  hostProcessesWith,
  leaseContext,
  sandboxConfig,
  sandboxProvider,
} from '../support/sandbox.js';
import { startSshd, type Sshd } from '../support/sshd.js';

type Streaming = Pick<ProviderExecRequest, 'onOutput' | 'stdinStream' | 'onStarted' | 'stdin'>;
/** Runs `/bin/sh -c script` on one path. */
type Exec = (script: string, streaming: Streaming, timeoutMs?: number) => Promise<ExecResult>;

/** Collects what onOutput hands over, per stream. */
function collector() {
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  return {
    chunks,
    onOutput: (stream: 'stdout' | 'stderr', chunk: Buffer) => {
      expect(Buffer.isBuffer(chunk)).toBe(true);
      chunks[stream].push(Buffer.from(chunk)); // a copy: the caller may reuse nothing it was handed
    },
    bytes: (stream: 'stdout' | 'stderr') => Buffer.concat(chunks[stream]),
    text: (stream: 'stdout' | 'stderr') => Buffer.concat(chunks[stream]).toString('utf8'),
  };
}

/** Stdin the test writes while the command runs; it ends when end() is called. */
class Feed implements AsyncIterable<Buffer> {
  private queue: Buffer[] = [];
  private ended = false;
  private wake: (() => void) | null = null;
  pulled = 0;

  push(chunk: string | Buffer): void {
    this.queue.push(Buffer.from(chunk));
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        this.pulled += next.length;
        yield next;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * The cases every path passes. `pipes`: stdin is a local pipe (so its backpressure is measurable here).
 * `signals`: a signal reaches the command here (sshd refuses them to a root login, as the suite's is).
 */
function streamingCases(exec: () => Exec, { pipes, signals = true }: { pipes: boolean; signals?: boolean }) {
  it('hands over 5 MB of random bytes unchanged, in order, keeping none of it', async () => {
    const out = collector();
    const res = await exec()(
      'f=$(mktemp); head -c 5000000 /dev/urandom > "$f"; sha256sum "$f" >&2; cat "$f"; rm -f "$f"',
      { onOutput: out.onOutput },
      60_000,
    );
    expect(res.exitCode).toBe(0);
    const stdout = out.bytes('stdout');
    expect(stdout.length).toBe(5_000_000);
    expect(out.text('stderr').split(' ')[0]).toBe(sha256(stdout));
    expect(out.chunks.stdout.length).toBeGreaterThan(1); // as it came, not once at the end
    expect(res.stdout).toBe('');
    expect(res.stderr).toBe('');
  });

  it("holds a stream while onOutput's promise is pending, back to the command", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let stdoutBytes = 0;
    const err = collector();
    const done = exec()('head -c 8000000 /dev/zero; echo written >&2', {
      onOutput: (stream, chunk) => {
        if (stream === 'stderr') return err.onOutput(stream, chunk);
        stdoutBytes += chunk.length;
        return stdoutBytes === chunk.length ? held : undefined; // the first chunk is taken only on release
      },
    });
    await until('the first chunk', () => stdoutBytes > 0);
    await sleep(500);
    expect(stdoutBytes).toBeLessThan(8_000_000);
    expect(err.text('stderr')).toBe(''); // head is still writing: the held stream backed up to it
    release();
    const res = await done;
    expect(res.exitCode).toBe(0);
    expect(stdoutBytes).toBe(8_000_000);
    expect(err.text('stderr')).toBe('written\n');
  });

  it('hands over output without a trailing newline, stdout and stderr apart', async () => {
    const out = collector();
    const res = await exec()("printf 'out1\\n'; printf 'err1\\n' >&2; printf out2; printf err2 >&2", {
      onOutput: out.onOutput,
    });
    expect(res.exitCode).toBe(0);
    expect(out.text('stdout')).toBe('out1\nout2');
    expect(out.text('stderr')).toBe('err1\nerr2');
  });

  it('feeds stdin as it is written, and ends the command when it ends', async () => {
    const out = collector();
    const feed = new Feed();
    let ended = false;
    const done = exec()('cat', { onOutput: out.onOutput, stdinStream: feed }).finally(() => (ended = true));
    feed.push('first chunk\n');
    await until('the first chunk back', () => out.text('stdout') === 'first chunk\n');
    feed.push(Buffer.from([0, 1, 2, 255, 10]));
    feed.push('third, no newline');
    const expected = Buffer.concat([
      Buffer.from('first chunk\n'),
      Buffer.from([0, 1, 2, 255, 10]),
      Buffer.from('third, no newline'),
    ]);
    await until('all three chunks back', () => out.bytes('stdout').equals(expected));
    await sleep(200);
    expect(ended).toBe(false); // stdin is still open: cat still runs
    feed.end();
    const res = await done;
    expect(res.exitCode).toBe(0);
    expect(out.bytes('stdout').equals(expected)).toBe(true);
  });

  it('reads stdin only as fast as the command takes it', async () => {
    const total = 8 * 1024 * 1024;
    const feed = new Feed();
    for (let i = 0; i < total / 65536; i++) feed.push(Buffer.alloc(65536, i % 256));
    feed.end();
    const out = collector();
    let ready = false;
    const done = exec()('echo ready; sleep 2; wc -c', {
      stdinStream: feed,
      onOutput: (stream, chunk) => {
        out.onOutput(stream, chunk);
        ready ||= out.text('stdout').startsWith('ready');
      },
    });
    await until('the command to start', () => ready);
    await sleep(500);
    // While the command sleeps, only what the pipes hold was read from the source.
    if (pipes) expect(feed.pulled).toBeLessThan(1024 * 1024);
    const res = await done;
    expect(res.exitCode).toBe(0);
    expect(out.text('stdout').trim().split('\n').pop()!.trim()).toBe(String(total));
  });

  it('stops reading stdin once the command has exited', async () => {
    let pulled = 0;
    let finished = false;
    async function* endless(): AsyncGenerator<Buffer> {
      try {
        for (;;) {
          pulled++;
          yield Buffer.from('more\n');
          await sleep(5);
        }
      } finally {
        finished = true;
      }
    }
    const res = await exec()('head -n 3 >/dev/null', { stdinStream: endless(), onOutput: () => undefined });
    expect(res.exitCode).toBe(0);
    await until('the source to be told', () => finished);
    const seen = pulled;
    await sleep(200);
    expect(pulled).toBe(seen);
  });

  if (!signals) return;
  it('signals the process group: SIGUSR1 reaches a trapping shell and its child', async () => {
    const marker = `300.${Math.floor(Math.random() * 1e6)}`;
    const out = collector();
    let control: CommandControl | null = null;
    let started = 0;
    const done = exec()(`trap "exit 7" USR1; echo ready; sleep ${marker} & wait`, {
      onOutput: out.onOutput,
      onStarted: (c) => {
        started++;
        control = c;
      },
    });
    await until('the trap to be set', () => control !== null && out.text('stdout') === 'ready\n');
    control!.kill('SIGUSR1');
    const res = await done;
    expect(res.exitCode).toBe(7);
    expect(started).toBe(1);
    await until('the sleep to end', () => hostProcessesWith(marker).length === 0, 5_000);
  });

  it('SIGKILL ends the whole process group, a grandchild included', async () => {
    const marker = `301.${Math.floor(Math.random() * 1e6)}`;
    const out = collector();
    let control: CommandControl | null = null;
    const done = exec()(`sh -c "sleep ${marker} & wait" & echo ready; wait`, {
      onOutput: out.onOutput,
      onStarted: (c) => (control = c),
    });
    await until(
      'the grandchild',
      () => control !== null && out.text('stdout') === 'ready\n' && hostProcessesWith(marker).length > 0,
    );
    control!.kill('SIGKILL');
    const res = await done;
    expect(res.signal).toBe('SIGKILL');
    await until('the grandchild to end', () => hostProcessesWith(marker).length === 0, 5_000);
  });
}

const tmp = mkdtempSync(join(tmpdir(), 'envrun-exec-streaming-'));

describe('runProcess', () => {
  const exec: Exec = (script, streaming, timeoutMs = 30_000) =>
    runProcess({ command: '/bin/sh', args: ['-c', script], cwd: tmp, env: {}, timeoutMs, ...streaming });
  streamingCases(() => exec, { pipes: true });

  it('still hands complete lines to onLine', async () => {
    const out = collector();
    const lines: string[] = [];
    const res = await runProcess({
      command: '/bin/sh',
      args: ['-c', "printf 'a\\nb\\nc'"],
      cwd: tmp,
      env: {},
      timeoutMs: 10_000,
      onOutput: out.onOutput,
      onLine: (line) => lines.push(line),
    });
    expect(res.exitCode).toBe(0);
    expect(lines).toEqual(['a', 'b']);
    expect(out.text('stdout')).toBe('a\nb\nc');
  });

  it('ends the command and fails with the error when onOutput throws', async () => {
    const started = Date.now();
    await expect(
      exec('echo hi; sleep 30', {
        onOutput: () => {
          throw new Error('the journal is gone');
        },
      }),
    ).rejects.toThrow('the journal is gone');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("ends the command and fails with the error when onOutput's promise rejects", async () => {
    const started = Date.now();
    await expect(
      exec('echo hi; sleep 30', { onOutput: () => Promise.reject(new Error('the journal is full')) }),
    ).rejects.toThrow('the journal is full');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('ends the command and fails when the stdin stream fails', async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.from('x');
      throw new Error('input store unreachable');
    }
    await expect(exec('cat; sleep 30', { stdinStream: failing(), onOutput: () => undefined })).rejects.toThrow(
      'stdin stream failed: input store unreachable',
    );
  });

  it('refuses stdin and stdinStream together', async () => {
    await expect(exec('cat', { stdin: 'x', stdinStream: new Feed() })).rejects.toThrow(
      'stdin and stdinStream were both given',
    );
  });

  it('without onOutput, keeps the output in its result as before', async () => {
    const res = await exec('printf out; printf err >&2', {});
    expect(res).toMatchObject({ exitCode: 0, stdout: 'out', stderr: 'err' });
  });
});

describe('local driver', () => {
  const driver = createLocalDriver();
  const exec: Exec = (script, streaming, timeoutMs = 30_000) =>
    driver.execute(
      { attempt: 1, idempotencyKey: 'streaming' },
      { environment: {} as Environment, lease: { metadata: { cwd: tmp } } as never, record: null },
      { command: '/bin/sh', args: ['-c', script], env: {}, timeoutMs, ...streaming },
    );
  streamingCases(() => exec, { pipes: true });
});

describe('fake provider, behind the reply check', () => {
  const fake = checkedProvider(createFakeProvider({ rootDir: mkdtempSync(join(tmpdir(), 'envrun-fake-streaming-')) }));
  let exec: Exec;
  beforeAll(async () => {
    const { config } = await fake.validateConfig({ provider: 'fake' });
    const lease = await fake.acquireLease(config, { ...callContext(), idempotencyKey: randomUUID(), reuseKey: null });
    exec = (script, streaming, timeoutMs = 30_000) =>
      fake.execute(config, leaseContext(lease), {
        command: '/bin/sh',
        args: ['-c', script],
        env: {},
        timeoutMs,
        ...streaming,
      });
  });
  streamingCases(() => exec, { pipes: true });
});

describe('bubblewrap sandbox', () => {
  let exec: Exec;
  let close: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    if (!hasBwrap()) throw new Error('bwrap is not installed: the sandbox path cannot be tested');
    const provider = await sandboxProvider();
    const { config } = await provider.validateConfig(sandboxConfig({}));
    const lease = await provider.acquireLease(config, {
      ...callContext(),
      idempotencyKey: randomUUID(),
      reuseKey: null,
    });
    await provider.realizeWorkspace(config, {
      ...leaseContext(lease),
      localPath: mkdtempSync(join(tmpdir(), 'envrun-bwrap-streaming-')),
    });
    exec = (script, streaming, timeoutMs = 30_000) =>
      provider.execute(config, leaseContext(lease), {
        command: '/bin/sh',
        args: ['-c', script],
        env: {},
        timeoutMs,
        ...streaming,
      });
    close = async () => {
      await provider.releaseLease(config, {
        ...leaseContext(lease),
        keep: false,
        cancelActiveWork: true,
        syncBackTo: null,
      });
    };
  });
  afterAll(() => close());
  streamingCases(() => exec, { pipes: true });

  it('SIGTERM reaches the command, not just the sandbox: a trap runs', async () => {
    const out = collector();
    let control: CommandControl | null = null;
    const done = exec('trap "echo trapped; exit 3" TERM; echo ready; sleep 30 & wait', {
      onOutput: out.onOutput,
      onStarted: (c) => (control = c),
    });
    await until('the trap to be set', () => control !== null && out.text('stdout') === 'ready\n');
    control!.kill('SIGTERM');
    const res = await done;
    expect(res.exitCode).toBe(3);
    expect(out.text('stdout')).toBe('ready\ntrapped\n');
  });
});

describe('ssh driver (a real sshd)', () => {
  const keyVar = `ENVRUN_TEST_STREAMING_KEY_${randomUUID().slice(0, 8)}`;
  const sshdDir = mkdtempSync(join(tmpdir(), 'envrun-sshd-streaming-'));
  let sshd: Sshd;
  let exec: Exec;
  beforeAll(async () => {
    sshd = await startSshd(sshdDir);
    process.env[keyVar] = sshd.privateKey;
    const driver = createSshDriver();
    const environment = {
      id: 'env-streaming',
      driver: 'ssh',
      config: driver.validateConfig({
        host: '127.0.0.1',
        port: sshd.port,
        username: sshd.username,
        remoteWorkspacePath: tmp,
        privateKeySecretRef: `env:${keyVar}`,
        knownHosts: sshd.knownHosts,
      }),
    } as unknown as Environment;
    exec = (script, streaming, timeoutMs = 30_000) =>
      driver.execute(
        { attempt: 1, idempotencyKey: 'streaming' },
        { environment, lease: {} as never, record: null },
        { command: '/bin/sh', args: ['-c', script], cwd: tmp, env: { STREAMING: 'yes' }, timeoutMs, ...streaming },
      );
  });
  afterAll(async () => {
    delete process.env[keyVar];
    await sshd?.stop();
  });
  // OpenSSH delivers signals only to a login that is not root's.
  streamingCases(() => exec, { pipes: false, signals: userInfo().username !== 'root' });

  it('the environment still goes ahead of a streamed stdin', async () => {
    const out = collector();
    const feed = new Feed();
    feed.push('line\n');
    feed.end();
    const res = await exec('echo "$STREAMING"; cat', { onOutput: out.onOutput, stdinStream: feed });
    expect(res.exitCode).toBe(0);
    expect(out.text('stdout')).toBe('yes\nline\n');
  });

  it('a timeout ends the call even when the server refuses the signal', async () => {
    const marker = `303.${Math.floor(Math.random() * 1e6)}`;
    const started = Date.now();
    try {
      const res = await exec(`sleep ${marker}`, {}, 1_000);
      expect(res).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGKILL' });
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      for (const pid of hostProcessesWith(marker)) process.kill(pid, 'SIGKILL'); // left by a root login
    }
  });

  it('refuses a signal SSH cannot name', async () => {
    let control: CommandControl | null = null;
    const done = exec('sleep 2', { onStarted: (c) => (control = c) });
    await until('the command to start', () => control !== null);
    expect(() => control!.kill('SIGWINCH')).toThrow('ssh cannot send SIGWINCH');
    expect((await done).exitCode).toBe(0);
  });

  it('a server that refuses signals: SIGKILL still ends the call', async () => {
    const keys = join(sshdDir, 'authorized_keys');
    const key = readFileSync(keys, 'utf8');
    writeFileSync(keys, `command="eval \\"$SSH_ORIGINAL_COMMAND\\"" ${key}`); // signals to it are refused
    const marker = `302.${Math.floor(Math.random() * 1e6)}`;
    try {
      const out = collector();
      let control: CommandControl | null = null;
      const done = exec(`echo ready; sleep ${marker}`, { onOutput: out.onOutput, onStarted: (c) => (control = c) });
      await until('the command to start', () => control !== null && out.text('stdout') === 'ready\n');
      const killedAt = Date.now();
      control!.kill('SIGKILL');
      const res = await done;
      expect(res.signal).toBe('SIGKILL');
      expect(res.exitCode).toBeNull();
      expect(Date.now() - killedAt).toBeLessThan(15_000);
      // The signal was refused indeed: the call ended without it, and the command runs on (no terminal).
      expect(hostProcessesWith(marker).length).toBeGreaterThan(0);
    } finally {
      writeFileSync(keys, key);
      for (const pid of hostProcessesWith(marker)) process.kill(pid, 'SIGKILL'); // what the server left running
    }
  });
});

describe('ssh signal requests', () => {
  // An SSH server of our own (ssh2's) shows what the client sends: the signal requests go out even once the
  // command's stdin has ended (ssh2's ClientChannel.signal() then sends nothing). Its server drops such a
  // request itself (a session whose client sent EOF is "ending"), so they are read off its packet log.
  const keyVar = `ENVRUN_TEST_SIGNAL_KEY_${randomUUID().slice(0, 8)}`;
  const received: string[] = [];
  let running: ServerChannel | null = null;
  let server: Server;
  let exec: Exec;
  beforeAll(async () => {
    process.env[keyVar] = sshUtils.generateKeyPairSync('ed25519').private;
    const debug = (line: string) => {
      const name = /CHANNEL_REQUEST \(r:\d+, signal: (\w+)\)/.exec(line)?.[1];
      if (!name) return;
      received.push(name);
      const channel = running;
      setImmediate(() => {
        if (name === 'USR1') channel?.exit(7);
        else channel?.exit(name);
        channel?.end();
      });
    };
    server = new Server(
      { hostKeys: [sshUtils.generateKeyPairSync('ed25519').private], debug },
      (client: Connection) => {
        client.on('authentication', (ctx) => ctx.accept());
        client.on('error', () => undefined);
        client.on('session', (accept) => {
          const session = accept();
          session.on('exec', (acceptExec) => {
            const channel = acceptExec();
            running = channel;
            channel.on('data', () => undefined); // the environment and stdin
            channel.on('end', () => channel.write('ready\n')); // stdin has ended: signals come after it
          });
        });
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const driver = createSshDriver();
    const environment = {
      id: 'env-signals',
      driver: 'ssh',
      config: driver.validateConfig({
        host: '127.0.0.1',
        port: (server.address() as { port: number }).port,
        username: 'envrun',
        remoteWorkspacePath: tmp,
        privateKeySecretRef: `env:${keyVar}`,
        strictHostKeyChecking: false,
      }),
    } as unknown as Environment;
    exec = (script, streaming, timeoutMs = 30_000) =>
      driver.execute(
        { attempt: 1, idempotencyKey: 'signals' },
        { environment, lease: {} as never, record: null },
        { command: '/bin/sh', args: ['-c', script], cwd: tmp, env: {}, timeoutMs, ...streaming },
      );
  });
  afterAll(async () => {
    delete process.env[keyVar];
    await new Promise((resolve) => server?.close(resolve));
  });

  for (const [signal, expected] of [
    ['SIGUSR1', { exitCode: 7, signal: null }],
    ['SIGTERM', { exitCode: null, signal: 'SIGTERM' }],
    ['SIGKILL', { exitCode: null, signal: 'SIGKILL' }],
  ] as const) {
    it(`sends ${signal} after stdin has ended`, async () => {
      const out = collector();
      let control: CommandControl | null = null;
      const done = exec('ignored', { stdin: 'input', onOutput: out.onOutput, onStarted: (c) => (control = c) });
      await until('stdin to end', () => control !== null && out.text('stdout') === 'ready\n');
      received.length = 0;
      control!.kill(signal);
      expect(await done).toMatchObject(expected);
      expect(received).toEqual([signal.slice(3)]);
    });
  }
});

describe('Paperclip plugin provider', () => {
  // A plugin worker that streams its command's output as `execute.log` chunks (strings), then replies.
  const streamed: [string, string][] = [
    ['stdout', 'héllo '],
    ['stdout', 'world\n'],
    ['stderr', 'warn\n'],
    ['progress', "not the command's\n"],
  ];
  let calls = 0;
  let hang = false;
  const worker: PluginWorkerLike = {
    supports: () => true,
    async call(method, _params, options) {
      calls++;
      if (method !== 'environmentExecute') throw new Error(`unexpected ${method}`);
      for (const [stream, chunk] of streamed) options?.onOutput?.(stream, chunk);
      if (hang)
        await new Promise((_, reject) => {
          if (options?.signal?.aborted) reject(new Error('cancelled'));
          options?.signal?.addEventListener('abort', () => reject(new Error('cancelled')), { once: true });
        });
      return { exitCode: 0, signal: null, timedOut: false, stdout: 'héllo world\n', stderr: 'warn\n' };
    },
  };
  const provider = createPaperclipProvider({
    worker,
    pluginKey: 'envrun-test.streaming',
    driverKey: 'streaming-plugin',
    stateDir: mkdtempSync(join(tmpdir(), 'envrun-plugin-streaming-')),
  });
  const lease = { providerLeaseId: 'plugin://1', metadata: {}, expiresAt: null };
  const request = { command: 'ignored', args: [], env: {}, timeoutMs: 10_000 };

  it("hands the plugin's stdout and stderr chunks over as UTF-8 bytes; progress lines still come", async () => {
    const out = collector();
    const lines: string[] = [];
    let started = 0;
    const res = await provider.execute(
      { provider: 'streaming-plugin' },
      { ...leaseContext(lease), onProgress: (l) => lines.push(l) },
      { ...request, onOutput: out.onOutput, onStarted: () => started++ },
    );
    expect(res.exitCode).toBe(0);
    expect(out.bytes('stdout').equals(Buffer.from('héllo world\n', 'utf8'))).toBe(true);
    expect(out.text('stderr')).toBe('warn\n');
    expect(lines).toEqual(['héllo world', 'warn', "not the command's"]);
    expect(started).toBe(0); // a plugin's command is ended through the call's signal
  });

  it('hands chunks to a slow journal one at a time, in order', async () => {
    let busy = 0;
    let most = 0;
    const out = collector();
    await provider.execute({ provider: 'streaming-plugin' }, leaseContext(lease), {
      ...request,
      onOutput: async (stream, chunk) => {
        most = Math.max(most, ++busy);
        await sleep(20);
        out.onOutput(stream, chunk);
        busy--;
      },
    });
    expect(most).toBe(1);
    expect(out.text('stdout')).toBe('héllo world\n');
    expect(out.text('stderr')).toBe('warn\n');
  });

  it('refuses a stdin stream before calling the plugin', async () => {
    const before = calls;
    await expect(
      provider.execute({ provider: 'streaming-plugin' }, leaseContext(lease), { ...request, stdinStream: new Feed() }),
    ).rejects.toThrow('the provider streaming-plugin cannot stream stdin');
    expect(calls).toBe(before);
  });

  it('cancels the call and fails with the error when onOutput throws', async () => {
    hang = true;
    try {
      await expect(
        provider.execute({ provider: 'streaming-plugin' }, leaseContext(lease), {
          ...request,
          onOutput: () => {
            throw new Error('the journal is gone');
          },
        }),
      ).rejects.toThrow('the journal is gone');
    } finally {
      hang = false;
    }
  });
});
