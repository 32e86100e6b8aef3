// The SSH connection to an ssh environment's host, and commands run over it. The private key is a secret
// *reference* resolved here, on the worker, at run time: it never enters config, lease metadata, the
// activity log or workflow history. Host keys are checked against `knownHosts` unless told otherwise.
import { Readable } from 'node:stream';
// Type only: ssh2 (and its crypto dependencies) loads when an ssh environment first connects (connect()).
import type { Client, ClientChannel } from 'ssh2';
import type { ExecResult, SshDriverConfig } from '../../contracts/index.js';
import { NonRetryableError } from '../../contracts/errors.js';
import type { CommandControl } from '../providers/contract.js';
import { resolveSecretRef } from '../../lib/secret-ref.js';
import { DEFAULT_PATH, LineSplitter, TailBuffer, pipeStdin, streamOutput, type OutputHandler } from '../process.js';

/** POSIX single-quote quoting: the remote shell sees each argument as one literal word. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Does an OpenSSH known_hosts text list this host key for host:port? */
export function knownHostsAccepts(knownHosts: string, host: string, port: number, key: Buffer): boolean {
  const names = port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
  const b64 = key.toString('base64');
  return knownHosts.split('\n').some((line) => {
    const [hosts, , blob] = line.trim().split(/\s+/);
    return Boolean(hosts && blob && blob === b64 && hosts.split(',').some((h) => names.includes(h)));
  });
}

export type SshConfig = ReturnType<typeof SshDriverConfig.parse>;

class HostKeyRejected extends NonRetryableError {
  override name = 'HostKeyRejected';
  override readonly code = 'host_key_rejected';
}

async function connect(config: SshConfig): Promise<Client> {
  const privateKey = await resolveSecretRef(config.privateKeySecretRef);
  const where = `${config.username}@${config.host}:${config.port}`;
  const { Client: SshClient } = await import('ssh2');
  return new Promise((resolve, reject) => {
    const client = new SshClient();
    let hostKeyError: Error | null = null;
    client.once('ready', () => resolve(client));
    client.once('error', (err) =>
      reject(hostKeyError ?? new Error(`ssh connection to ${where} failed: ${err.message}`)),
    );
    client.connect({
      host: config.host,
      port: config.port,
      username: config.username,
      privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => {
        if (!config.strictHostKeyChecking) return true;
        if (config.knownHosts && knownHostsAccepts(config.knownHosts, config.host, config.port, key)) return true;
        hostKeyError = new HostKeyRejected(
          `host key of ${config.host}:${config.port} is not in knownHosts (strictHostKeyChecking is on); add the host's key to the environment's knownHosts`,
        );
        return false;
      },
    });
  });
}

interface RemoteExec {
  command: string;
  /** Written to the remote command's stdin before `stdin` (remoteCommand's environment). */
  stdinPrefix?: string | undefined;
  /** A stream is piped (with backpressure), never read whole. */
  stdin?: Buffer | string | Readable | undefined;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Each complete output line, for heartbeat progress. */
  onLine?: ((line: string) => void) | undefined;
  /** Each output chunk as it comes: none is kept (stdout/stderr are ''). */
  onOutput?: OutputHandler | undefined;
  /** Stdin as a stream (after `stdinPrefix`), instead of `stdin`. */
  stdinStream?: AsyncIterable<Buffer> | undefined;
  /** Called once the command runs, with what signals it (see remoteControl). */
  onStarted?: ((control: CommandControl) => void) | undefined;
}

/** The signals an SSH "signal" request can name (RFC 4254 6.10). */
const SSH_SIGNALS = new Set('ABRT ALRM FPE HUP ILL INT KILL PIPE QUIT SEGV TERM USR1 USR2'.split(' '));
/** How long a SIGKILL may go unanswered before the channel is closed, and then before the connection is dropped. */
const KILL_GRACE_MS = 2_000;

/**
 * Sends an SSH "signal" request. ssh2's ClientChannel.signal() (1.17) sends nothing once the channel's stdin has
 * ended (its writable side), though SSH allows the request until the channel closes: with stdin ended at EOF
 * (a string stdin, a stream that ended), the request goes out through ssh2's protocol object instead.
 */
function sendSignal(channel: ClientChannel, name: string): void {
  const c = channel as unknown as {
    outgoing?: { id: number; state: string };
    _client?: { _protocol?: { signal(id: number, name: string): void } };
  };
  const protocol = c._client?._protocol;
  const state = c.outgoing?.state;
  if (protocol && (state === 'open' || state === 'eof')) protocol.signal(c.outgoing!.id, name);
  else channel.signal(name);
}

/**
 * Signals over the channel: OpenSSH's sshd (7.9 and later) sends the signal to the session's process group,
 * which is the remote command's. It refuses them for a root login (no privilege separation after login) and
 * a forced command, and other servers may ignore them: a SIGKILL that has not ended the command within
 * KILL_GRACE_MS closes the channel, then drops the connection. That ends the call, but, without a terminal,
 * not the remote processes themselves. A signal SSH cannot name is refused.
 */
function remoteControl(channel: ClientChannel, isClosed: () => boolean, giveUp: () => void): CommandControl {
  let killTimer: NodeJS.Timeout | undefined;
  return {
    kill(signal) {
      if (isClosed()) return;
      const name = signal.replace(/^SIG/, '');
      if (!SSH_SIGNALS.has(name))
        throw new Error(
          `ssh cannot send ${signal} to a remote command (it sends SIG${[...SSH_SIGNALS].join(', SIG')})`,
        );
      sendSignal(channel, name);
      if (name === 'KILL') {
        killTimer ??= setTimeout(() => {
          if (!isClosed()) giveUp();
        }, KILL_GRACE_MS);
        killTimer.unref();
      }
    },
  };
}

export function remoteExec(client: Client, options: RemoteExec): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (options.stdinStream && options.stdin !== undefined) {
      reject(new Error('stdin and stdinStream were both given: a command takes one'));
      return;
    }
    client.exec(options.command, (err, channel) => {
      if (err) return reject(err);
      const { onOutput } = options;
      // Journaled output is handed on as it comes; otherwise only a bounded tail is kept.
      const stdout = onOutput ? null : new TailBuffer();
      const stderr = onOutput ? null : new TailBuffer();
      const lines = options.onLine ? new LineSplitter(options.onLine) : null;
      let timedOut = false;
      let closed = false;
      let closedAfterKill = false;
      // sshd keeps the channel open while its command runs: when the command outlives the close (the server
      // refused the signal), the connection is dropped, which ends the call but not the remote command.
      const giveUp = () => {
        channel.close();
        setTimeout(() => closed || client.end(), KILL_GRACE_MS).unref();
      };
      const stop = () => {
        sendSignal(channel, 'KILL');
        giveUp();
      };
      // A failing caller callback (output, stdin) ends the command, and is what the call rejects with.
      let failure: Error | null = null;
      const fail = (err: unknown) => {
        if (failure) return;
        failure = err instanceof Error ? err : new Error(String(err));
        stop();
      };
      const timer = setTimeout(() => {
        timedOut = true;
        stop();
      }, options.timeoutMs);
      options.signal?.addEventListener('abort', stop, { once: true });
      channel.on('data', (d: Buffer) => {
        stdout?.push(d);
        lines?.push(d);
      });
      channel.stderr.on('data', (d: Buffer) => stderr?.push(d));
      const streamed = onOutput
        ? streamOutput(
            [
              { stream: 'stdout', readable: channel },
              { stream: 'stderr', readable: channel.stderr },
            ],
            onOutput,
            fail,
          )
        : null;
      channel.on('error', () => undefined); // a write after the remote closed: the exit status says what happened
      let feeding: { stop(): void } | null = null;
      channel.on('close', (code: number | null, signal?: string) => {
        closed = true;
        clearTimeout(timer);
        feeding?.stop();
        options.signal?.removeEventListener('abort', stop);
        if (options.stdin instanceof Readable) {
          options.stdin.unpipe(channel);
          options.stdin.destroy();
        }
        void (streamed?.drained() ?? Promise.resolve()).then(() => {
          if (failure) return reject(failure);
          resolve({
            exitCode: timedOut ? null : (code ?? null),
            signal: signal ?? (timedOut || closedAfterKill ? 'SIGKILL' : null),
            timedOut,
            stdout: stdout?.toString() ?? '',
            stderr: stderr?.toString() ?? '',
          });
        });
      });
      if (options.onStarted) {
        try {
          const afterKill = () => {
            closedAfterKill = true;
            giveUp();
          };
          options.onStarted(remoteControl(channel, () => closed, afterKill));
        } catch (e) {
          fail(e);
        }
      }
      if (options.stdinStream) {
        if (options.stdinPrefix) channel.write(options.stdinPrefix);
        feeding = pipeStdin(channel, options.stdinStream, fail);
      } else if (options.stdin instanceof Readable) {
        if (options.stdinPrefix) channel.write(options.stdinPrefix);
        options.stdin.on('error', () => channel.close());
        options.stdin.pipe(channel);
      } else {
        channel.end(Buffer.concat([Buffer.from(options.stdinPrefix ?? ''), Buffer.from(options.stdin ?? '')]));
      }
    });
  });
}

/**
 * Reads `NAME` and value lines from stdin up to an empty line, exports each (the value decoded by printf
 * %b, a builtin of every common sh), then runs the command on the rest of stdin.
 */
const READ_ENV =
  'while IFS= read -r n && [ -n "$n" ]; do IFS= read -r v; v=$(printf "%bx" "$v"); export "$n=${v%x}"; done; exec "$@"';

/** A value as one line for printf %b: every byte but [A-Za-z0-9_./-] as \0NNN. */
function printfEscaped(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_./-]/.test(c) ? c : `\\0${byte.toString(8).padStart(3, '0')}`;
  }
  return out;
}

/**
 * `cd DIR && exec env -i PATH=… sh -c READ_ENV envrun-env COMMAND ARGS…`, every word quoted: nothing is left
 * to the remote shell. The environment's values go ahead of the command's stdin, never on a command line:
 * the remote host's `ps` shows those to every user there.
 */
export function remoteCommand(
  cwd: string,
  env: Record<string, string>,
  command: string,
  args: string[],
): { command: string; stdinPrefix: string } {
  let stdinPrefix = '';
  for (const [name, value] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new NonRetryableError(`ssh: ${name} is not an environment variable name`);
    if (value.includes('\0')) throw new NonRetryableError(`ssh: the environment variable ${name} holds a NUL byte`);
    stdinPrefix += `${name}\n${printfEscaped(value)}\n`;
  }
  const words = ['env', '-i', `PATH=${DEFAULT_PATH}`, 'sh', '-c', READ_ENV, 'envrun-env', command, ...args];
  return {
    command: `cd -- ${shellQuote(cwd)} && exec ${words.map(shellQuote).join(' ')}`,
    stdinPrefix: `${stdinPrefix}\n`,
  };
}

export async function withConnection<T>(config: SshConfig, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(config);
  try {
    return await fn(client);
  } finally {
    client.end();
  }
}

export async function mustSucceed(client: Client, what: string, command: string): Promise<void> {
  const res = await remoteExec(client, { command, timeoutMs: 10 * 60_000 });
  if (res.exitCode !== 0)
    throw new Error(`${what} failed (exit ${res.exitCode}): ${res.stderr.trim().split('\n')[0] ?? ''}`);
}
