// The writer of one command's journal: chunks as the command writes them, batched into `command_output`
// rows. At most one write is in flight; what arrives meanwhile is batched into the next one, so a line
// written after a quiet spell is stored (and its readers notified) at once, and a fast stream is stored in
// few large rows. Bounded: past `maxBytes` one `truncated` marker is written and the rest only counted.
// Backpressure: `push` returns a promise while more than `highWater` bytes wait; the caller stops reading.
import type { JournalCounts, OutputChunk } from './commands.js';
import { STREAM_CODES } from './commands.js';

const MAX_ROW_BYTES = 1024 * 1024;

export interface JournalSink {
  appendOutput(key: string, chunks: OutputChunk[], counts: JournalCounts): Promise<void>;
}

/** The last `limit` bytes of a stream, kept in a small ring (the tail an exec answer carries). */
export class SmallTail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    if (this.limit === 0) return;
    const keep = chunk.length > this.limit ? chunk.subarray(chunk.length - this.limit) : chunk;
    this.chunks.push(Buffer.from(keep));
    this.size += keep.length;
    while (this.size - this.chunks[0]!.length >= this.limit) this.size -= this.chunks.shift()!.length;
  }
  bytes(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.length > this.limit ? all.subarray(all.length - this.limit) : all;
  }
}

export class CommandWriter {
  readonly counts: JournalCounts = { stdoutBytes: 0, stderrBytes: 0, keptBytes: 0, truncated: false };
  private seq = 0;
  private queue: Array<{ seq: number; stream: number; parts: Buffer[]; size: number }> = [];
  private queued = 0;
  private flushing: Promise<void> | null = null;
  private failed: Error | null = null;
  private drained: Array<() => void> = [];
  readonly tails: { stdout: SmallTail; stderr: SmallTail };

  constructor(
    private readonly sink: JournalSink,
    private readonly key: string,
    private readonly maxBytes: number,
    tailBytes = 0,
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    this.tails = { stdout: new SmallTail(tailBytes), stderr: new SmallTail(tailBytes) };
  }

  /** Takes a chunk; a promise when the caller should wait before reading more. */
  push(stream: 'stdout' | 'stderr', chunk: Buffer): void | Promise<void> {
    if (chunk.length === 0) return;
    this.counts[stream === 'stdout' ? 'stdoutBytes' : 'stderrBytes'] += chunk.length;
    this.tails[stream].push(chunk);
    const room = this.maxBytes - this.counts.keptBytes;
    if (room > 0) {
      const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
      this.counts.keptBytes += kept.length;
      this.enqueue(STREAM_CODES[stream], kept);
    }
    if (chunk.length > room && !this.counts.truncated) {
      this.counts.truncated = true;
      this.enqueue(STREAM_CODES.truncated, Buffer.alloc(0));
    }
    this.kick();
    if (this.failed) throw this.failed;
    if (this.queued > this.highWater) return new Promise((resolve) => this.drained.push(resolve));
  }

  /** Writes what is queued and the final counters; throws the first write error. */
  async close(): Promise<JournalCounts> {
    while (this.flushing) await this.flushing;
    if (this.failed) throw this.failed;
    await this.sink.appendOutput(this.key, [], this.counts);
    return this.counts;
  }

  private enqueue(stream: number, data: Buffer): void {
    const last = this.queue.at(-1);
    // Adjacent chunks of one stream share a row (up to the row size): fewer rows, same bytes, same order.
    if (
      last &&
      last.stream === stream &&
      stream !== STREAM_CODES.truncated &&
      last.size + data.length <= MAX_ROW_BYTES
    ) {
      last.parts.push(data);
      last.size += data.length;
    } else {
      for (let off = 0; off < Math.max(1, data.length); off += MAX_ROW_BYTES) {
        const part = data.subarray(off, off + MAX_ROW_BYTES);
        this.queue.push({ seq: ++this.seq, stream, parts: [part], size: part.length });
      }
    }
    this.queued += data.length;
  }

  private kick(): void {
    if (this.flushing || this.failed || this.queue.length === 0) return;
    this.flushing = (async () => {
      while (this.queue.length && !this.failed) {
        // One append of at most ~4 MiB: a long queue goes in several.
        let bytes = 0;
        let n = 0;
        while (n < this.queue.length && (n === 0 || bytes + this.queue[n]!.size <= 4 * MAX_ROW_BYTES)) {
          bytes += this.queue[n]!.size;
          n++;
        }
        const batch: OutputChunk[] = this.queue.splice(0, n).map((q) => ({
          seq: q.seq,
          stream: q.stream,
          data: q.parts.length === 1 ? q.parts[0]! : Buffer.concat(q.parts),
        }));
        try {
          await this.sink.appendOutput(this.key, batch, this.counts);
        } catch (err) {
          this.failed = err as Error;
        }
        this.queued -= bytes;
        if (this.queued <= this.highWater / 2) for (const wake of this.drained.splice(0)) wake();
      }
      for (const wake of this.drained.splice(0)) wake();
      this.flushing = null;
    })();
  }
}
