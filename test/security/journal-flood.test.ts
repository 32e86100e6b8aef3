// ATTACK: a command prints as fast as it can while the store takes its output slowly (a loaded PostgreSQL):
// with nothing holding the command back, every chunk waited in the worker's memory for its INSERT (seen with
// the writer's high-water mark set to infinity: 200 MB printed → the worker grew by 208 MiB). The journal's
// writer now answers a chunk with a promise once 4 MiB wait, and the driver reads no more of the command until it settles: memory stays bounded, and the
// journal still gets every byte, in order. Also: past the command's limit one `truncated` marker is written
// and the rest only counted.
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { runProcess } from '../../drivers/process.js';
import { CommandWriter, type JournalSink } from '../../store/command-writer.js';
import { STREAM_CODES, type JournalCounts, type OutputChunk } from '../../store/commands.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MiB = 1024 ** 2;

/** A journal that takes `delayMs` a write (as a loaded store would) and keeps only a digest of what it got. */
class SlowJournal implements JournalSink {
  readonly digest = createHash('sha256');
  bytes = 0;
  lastSeq = 0;
  markers = 0;
  counts: JournalCounts | null = null;
  constructor(private readonly delayMs: number) {}
  async appendOutput(_key: string, chunks: OutputChunk[], counts: JournalCounts): Promise<void> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    for (const c of chunks) {
      expect(c.seq).toBe(this.lastSeq + 1); // in order, none lost, none twice
      this.lastSeq = c.seq;
      if (c.stream === STREAM_CODES.truncated) this.markers++;
      else {
        this.digest.update(c.data);
        this.bytes += c.data.length;
      }
    }
    this.counts = { ...counts };
  }
}

async function flood(megabytes: number, highWater: number, maxBytes = Number.MAX_SAFE_INTEGER) {
  const journal = new SlowJournal(250);
  const writer = new CommandWriter(journal, 'k', maxBytes, 0, highWater);
  gc();
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  try {
    const res = await runProcess({
      command: '/bin/sh',
      args: ['-c', `head -c ${megabytes * 1_000_000} /dev/zero | tr '\\0' 'z'`],
      cwd: tmpdir(),
      env: {},
      timeoutMs: 300_000,
      onOutput: (stream, chunk) => writer.push(stream, chunk),
    });
    expect(res.exitCode).toBe(0);
    await writer.close();
  } finally {
    clearInterval(sampler);
  }
  return { growth: peak - before, journal };
}

describe('a command flooding a slow journal', () => {
  it('200 MB into a store that takes 250 ms a write (16 MB/s): the worker stays bounded; every byte arrives, in order', async () => {
    const { growth, journal } = await flood(200, 4 * MiB);
    console.log(`200 MB into a slow journal: RSS grew ${(growth / MiB).toFixed(1)} MiB at the peak`);
    expect(journal.bytes).toBe(200_000_000);
    expect(journal.digest.digest('hex')).toBe(
      createHash('sha256').update(Buffer.alloc(200_000_000, 'z')).digest('hex'),
    );
    expect(growth).toBeLessThan(60 * MiB);
  }, 300_000);

  it('past the limit: one truncated marker, the rest counted but not kept', async () => {
    const { journal } = await flood(10, 4 * MiB, 3 * MiB);
    expect(journal.bytes).toBe(3 * MiB);
    expect(journal.markers).toBe(1);
    expect(journal.counts).toMatchObject({ stdoutBytes: 10_000_000, keptBytes: 3 * MiB, truncated: true });
  }, 120_000);
});
