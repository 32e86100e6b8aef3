// Running a command with exactly the environment we give it: never the host's (host secrets must not
// leak into a workspace or sandbox), no shell unless a caller asks for one, SIGTERM then SIGKILL on timeout.
// Output is hostile too: what is kept of it is bounded (the last MiB of each stream, lines cut at 64 KiB),
// however much a command prints and however it splits it.
import { spawn, type ChildProcess } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import type { ExecResult } from '../contracts/index.js';

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
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  signal?: AbortSignal | undefined;
}

export function explicitEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: DEFAULT_PATH, ...env };
}

/**
 * Keeps what a child prints, bounded: the last MiB of each stream, and each complete line (cut at the line
 * cap) handed to `onLine`. Output is hostile: nothing here grows with it.
 */
export function captureOutput(
  child: ChildProcess,
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void,
): { stdout(): string; stderr(): string } {
  const captured = { stdout: new TailBuffer(), stderr: new TailBuffer() };
  for (const stream of ['stdout', 'stderr'] as const) {
    const lines = onLine ? new LineSplitter((line) => onLine(line, stream)) : null;
    child[stream]!.on('data', (chunk: Buffer) => {
      captured[stream].push(chunk);
      lines?.push(chunk);
    });
  }
  return { stdout: () => captured.stdout.toString(), stderr: () => captured.stderr.toString() };
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

export function runProcess(options: RunProcessOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(options.command, options.args, {
      cwd: options.cwd,
      env: explicitEnv(options.env),
      shell: false,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group: a timeout kills the whole tree
    });
    const output = captureOutput(child, options.onLine);
    const { terminate, clear } = groupTerminator(child, options.killGraceMs);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, options.timeoutMs);
    const onAbort = () => terminate();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clear();
      options.signal?.removeEventListener('abort', onAbort);
      resolve({ exitCode: code, signal: signal ?? null, timedOut, stdout: output.stdout(), stderr: output.stderr() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.stdin ?? '');
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
