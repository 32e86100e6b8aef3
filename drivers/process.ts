// Running a command with exactly the environment we give it: never the host's (host secrets must not
// leak into a workspace or sandbox), no shell unless a caller asks for one, SIGTERM then SIGKILL on timeout.
// Output is hostile too: what is kept of it is bounded (the last MiB of each stream, lines cut at 64 KiB),
// however much a command prints and however it splits it. A caller that journals the output takes it as it
// comes instead (`onOutput`): nothing of it is kept here then.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { ExecResult } from '../contracts/index.js';
import type { CommandControl } from './providers/contract.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const MAX_CAPTURE = 1024 * 1024; // keep the last MiB of each stream
export const MAX_LINE = 64 * 1024; // a longer progress line is cut here (the rest of it is dropped)
const BLOCK = 64 * 1024;

/**
 * The last `limit` bytes of a stream. Chunks are copied into fixed 64 KiB blocks, reused once old enough
 * (no string concatenation, no per-chunk objects kept): memory stays ~limit + 64 KiB whatever the stream
 * size or chunking. Decoded once, at the end.
 */
export class TailBuffer {
  private readonly blocks: Buffer[] = [];
  private current: Buffer = Buffer.allocUnsafe(BLOCK);
  private used = 0;
  private readonly keepBlocks: number;

  constructor(private readonly limit = MAX_CAPTURE) {
    this.keepBlocks = Math.ceil(limit / BLOCK);
  }

  push(chunk: Buffer): void {
    let offset = chunk.length > this.limit + BLOCK ? chunk.length - this.limit - BLOCK : 0; // older bytes are dropped anyway
    while (offset < chunk.length) {
      const n = Math.min(BLOCK - this.used, chunk.length - offset);
      chunk.copy(this.current, this.used, offset, offset + n);
      this.used += n;
      offset += n;
      if (this.used === BLOCK) {
        this.blocks.push(this.current);
        this.current = this.blocks.length > this.keepBlocks ? this.blocks.shift()! : Buffer.allocUnsafe(BLOCK);
        this.used = 0;
      }
    }
  }

  toString(): string {
    const all = Buffer.concat([...this.blocks, this.current.subarray(0, this.used)]);
    let tail = all.length > this.limit ? all.subarray(all.length - this.limit) : all;
    if (tail.length < all.length) {
      // The cut may fall inside a UTF-8 character: start at the next character.
      let skip = 0;
      while (skip < 3 && skip < tail.length && (tail[skip]! & 0xc0) === 0x80) skip++;
      tail = tail.subarray(skip);
    }
    return tail.toString('utf8');
  }
}

/**
 * Splits a byte stream into lines for `onLine`. Only the current partial line is held, and never more than
 * `maxLine` characters of it: a longer line is emitted cut (marked `… [truncated]`) and the rest of it, up
 * to the next newline, is dropped. A final line without a newline is not emitted (as before).
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private dropping = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLine = MAX_LINE,
  ) {}

  push(chunk: Buffer): void {
    const text = this.decoder.write(chunk);
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      if (this.dropping) this.dropping = false;
      else this.emit(this.partial + text.slice(start, Math.min(nl, start + this.maxLine + 1)));
      this.partial = '';
      start = nl + 1;
    }
    if (this.dropping || start === text.length) return;
    this.partial += text.slice(start, start + this.maxLine + 1 - this.partial.length);
    if (this.partial.length > this.maxLine) {
      this.emit(this.partial);
      this.partial = '';
      this.dropping = true;
    }
  }

  private emit(line: string): void {
    this.onLine(line.length > this.maxLine ? `${line.slice(0, this.maxLine)}… [truncated]` : line);
  }
}

export interface RunProcessOptions {
  command: string;
  args: string[];
  cwd: string;
  /** The only variables the child sees (PATH defaulted when absent). */
  env: Record<string, string>;
  stdin?: string | Buffer | undefined;
  timeoutMs: number;
  killGraceMs?: number;
  /** Called with each complete output line (progress reporting). */
  onLine?: ((line: string, stream: 'stdout' | 'stderr') => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Each output chunk as the child writes it, in order per stream: none is kept (stdout/stderr are ''). */
  onOutput?: OutputHandler | undefined;
  /** Stdin as a stream, instead of `stdin`: piped to the child, whose stdin ends when it ends. */
  stdinStream?: AsyncIterable<Buffer> | undefined;
  /** Called once the child runs, with what signals its process group. */
  onStarted?: ((control: CommandControl) => void) | undefined;
}

/** Takes a chunk of output; a promise it returns holds that stream's reading until it settles (backpressure). */
export type OutputHandler = (stream: 'stdout' | 'stderr', chunk: Buffer) => void | Promise<void>;

export function explicitEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: DEFAULT_PATH, ...env };
}

/**
 * Hands each chunk of each stream to `onOutput` as it comes, in order. While a promise it returned is pending,
 * that stream is paused (so is the writer at its other end, once the pipe is full). What it throws or rejects
 * with goes to `onError` (once); no chunk follows it, and the stream is drained from then on. `drained()`
 * settles once no promise of `onOutput` is pending.
 */
export function streamOutput(
  streams: { stream: 'stdout' | 'stderr'; readable: Readable }[],
  onOutput: OutputHandler,
  onError: (err: Error) => void,
): { drained(): Promise<void> } {
  let failed = false;
  const pending = new Set<Promise<void>>();
  const failWith = (err: unknown) => {
    if (failed) return;
    failed = true;
    onError(err instanceof Error ? err : new Error(String(err)));
  };
  for (const { stream, readable } of streams) {
    readable.on('data', (chunk: Buffer) => {
      if (failed) return;
      let returned: void | Promise<void>;
      try {
        returned = onOutput(stream, chunk);
      } catch (err) {
        failWith(err);
        return;
      }
      if (!returned || typeof returned.then !== 'function') return;
      readable.pause();
      const settled: Promise<void> = returned.then(
        () => {
          pending.delete(settled);
          readable.resume();
        },
        (err: unknown) => {
          pending.delete(settled);
          failWith(err);
          readable.resume();
        },
      );
      pending.add(settled);
    });
  }
  return { drained: async () => void (await Promise.all([...pending])) };
}

/**
 * Keeps what a child prints, bounded: the last MiB of each stream, and each complete line (cut at the line
 * cap) handed to `onLine`. Output is hostile: nothing here grows with it. With `streaming`, every chunk goes
 * to its `onOutput` instead, as streamOutput says, and nothing is kept (stdout() and stderr() are '').
 */
export function captureOutput(
  child: ChildProcess,
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void,
  streaming?: { onOutput: OutputHandler; onError(err: Error): void },
): { stdout(): string; stderr(): string; drained(): Promise<void> } {
  const captured = streaming ? null : { stdout: new TailBuffer(), stderr: new TailBuffer() };
  for (const stream of ['stdout', 'stderr'] as const) {
    const lines = onLine ? new LineSplitter((line) => onLine(line, stream)) : null;
    child[stream]!.on('data', (chunk: Buffer) => {
      captured?.[stream].push(chunk);
      lines?.push(chunk);
    });
  }
  const streamed = streaming
    ? streamOutput(
        (['stdout', 'stderr'] as const).map((stream) => ({ stream, readable: child[stream]! })),
        streaming.onOutput,
        streaming.onError,
      )
    : null;
  return {
    stdout: () => captured?.stdout.toString() ?? '',
    stderr: () => captured?.stderr.toString() ?? '',
    drained: () => streamed?.drained() ?? Promise.resolve(),
  };
}

/**
 * Writes `source` to a child's stdin as it comes, waiting for the pipe to drain, and ends stdin when the
 * source ends. Once the child has closed its stdin (or `stop` is called) nothing more is read from the
 * source. A source that fails is reported to `onError`, and stdin is left open (the caller ends the command).
 */
export function pipeStdin(
  stdin: Writable,
  source: AsyncIterable<Buffer>,
  onError: (err: Error) => void,
): { stop(): void } {
  let stopped = false;
  const iterator = source[Symbol.asyncIterator]();
  const closed = () => stopped || stdin.destroyed || stdin.writableEnded;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    // A source waiting for its next chunk is told we are done (an async generator only once that chunk comes).
    void Promise.resolve()
      .then(() => iterator.return?.())
      .catch(() => undefined);
  };
  stdin.on('error', () => undefined); // EPIPE: the child exited or closed its stdin first
  stdin.once('close', stop);
  const drained = () =>
    new Promise<void>((resolve) => {
      const done = () => {
        stdin.off('drain', done);
        stdin.off('close', done);
        resolve();
      };
      stdin.on('drain', done);
      stdin.on('close', done);
    });
  void (async () => {
    try {
      while (!closed()) {
        const next = await iterator.next();
        if (next.done || closed()) break;
        if (!stdin.write(next.value) && !closed()) await drained();
      }
      if (!closed()) stdin.end();
    } catch (err) {
      if (!stopped) onError(new Error(`stdin stream failed: ${(err as Error).message ?? String(err)}`));
    }
  })();
  return { stop };
}

/** Ends a detached child's whole process group: SIGTERM, then SIGKILL once the grace time has passed. */
export function groupTerminator(child: ChildProcess, graceMs = 2000): { terminate(): void; clear(): void } {
  let killTimer: NodeJS.Timeout | undefined;
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      /* already gone */
    }
  };
  return {
    terminate() {
      killGroup('SIGTERM');
      killTimer ??= setTimeout(() => killGroup('SIGKILL'), graceMs);
    },
    clear() {
      if (killTimer) clearTimeout(killTimer);
    },
  };
}

/** Sends `signal` to a child's whole process group (it leads one: spawned detached); nothing once it is gone. */
export function groupControl(child: ChildProcess, isClosed: () => boolean): CommandControl {
  return {
    kill(signal) {
      if (isClosed() || !child.pid) return; // its pid, free again, could name another group by now
      try {
        process.kill(-child.pid, signal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    },
  };
}

export function runProcess(options: RunProcessOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (options.stdinStream && options.stdin !== undefined) {
      reject(new Error('stdin and stdinStream were both given: a command takes one'));
      return;
    }
    const child = spawn(options.command, options.args, {
      cwd: options.cwd,
      env: explicitEnv(options.env),
      shell: false,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group: a timeout kills the whole tree
    });
    const { terminate, clear } = groupTerminator(child, options.killGraceMs);
    // A failing caller callback (output, stdin) ends the command, and is what the call rejects with.
    let failure: Error | null = null;
    const fail = (err: Error) => {
      if (failure) return;
      failure = err;
      terminate();
    };
    const output = captureOutput(
      child,
      options.onLine,
      options.onOutput ? { onOutput: options.onOutput, onError: fail } : undefined,
    );
    let timedOut = false;
    let closed = false;
    const timer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, options.timeoutMs);
    const onAbort = () => terminate();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdin.on('error', () => undefined);
    const feeding = options.stdinStream ? pipeStdin(child.stdin, options.stdinStream, fail) : null;
    if (!feeding) child.stdin.end(options.stdin ?? '');
    if (options.onStarted) {
      const onStarted = options.onStarted;
      child.once('spawn', () => {
        try {
          onStarted(groupControl(child, () => closed));
        } catch (err) {
          fail(err instanceof Error ? err : new Error(String(err)));
        }
      });
    }
    child.on('error', (err) => {
      closed = true;
      clearTimeout(timer);
      feeding?.stop();
      options.signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, signal) => {
      closed = true;
      clearTimeout(timer);
      clear();
      feeding?.stop();
      options.signal?.removeEventListener('abort', onAbort);
      void output.drained().then(() => {
        if (failure) reject(failure);
        else
          resolve({
            exitCode: code,
            signal: signal ?? null,
            timedOut,
            stdout: output.stdout(),
            stderr: output.stderr(),
          });
      });
    });
  });
}

/** The first non-empty line of a stream, for short error messages. */
export function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? ''
  );
}
