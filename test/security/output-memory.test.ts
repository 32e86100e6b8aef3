// ATTACK: a provision or exec command prints without end — 50 MB on one line, no newline — to blow up the
// worker: the line buffer held it all and re-split it on every chunk, the capture re-concatenated strings.
// Memory must stay bounded (the last MiB of each stream, lines cut at 64 KiB), and output still correct.
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { LineSplitter, MAX_CAPTURE, MAX_LINE, TailBuffer, runProcess } from '../../drivers/process.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MiB = 1024 ** 2;

/** Runs `script` through runProcess with onLine set (as provision does); the RSS growth at its peak. */
async function measure(
  script: string,
): Promise<{ growth: number; lines: string[]; count: number; stdout: string; ms: number }> {
  gc();
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const lines: string[] = []; // the first 10 and the last one
  let count = 0;
  const started = Date.now();
  try {
    const res = await runProcess({
      command: '/bin/sh',
      args: ['-c', script],
      cwd: tmpdir(),
      env: {},
      timeoutMs: 300_000,
      onLine: (line) => {
        count++;
        if (lines.length >= 11) lines.pop();
        lines.push(line.length > 100 ? `${line.slice(0, 20)}…(${line.length})` : line);
      },
    });
    expect(res.exitCode).toBe(0);
    peak = Math.max(peak, process.memoryUsage().rss);
    return { growth: peak - before, lines, count, stdout: res.stdout, ms: Date.now() - started };
  } finally {
    clearInterval(sampler);
  }
}

describe('hostile output', () => {
  it('50 MB without a newline: the worker grows by far less than that, the capture keeps the last MiB', async () => {
    const { growth, lines, stdout, ms } = await measure(
      `head -c 50000000 /dev/zero | tr '\\0' x; printf '\\nlast line\\n'`,
    );
    console.log(`50 MB on one line: RSS grew ${(growth / MiB).toFixed(1)} MiB at the peak, in ${ms} ms`);
    expect(growth).toBeLessThan(40 * MiB);
    expect(stdout.length).toBe(MAX_CAPTURE);
    expect(stdout.endsWith('xxx\nlast line\n')).toBe(true);
    expect(lines).toEqual([`xxxxxxxxxxxxxxxxxxxx…(${MAX_LINE + '… [truncated]'.length})`, 'last line']);
  });

  it('50 MB of short lines: every line arrives, memory stays bounded', async () => {
    const { growth, lines, count, stdout } = await measure(`seq 1 6000000`);
    expect(growth).toBeLessThan(40 * MiB);
    expect(count).toBe(6_000_000);
    expect(lines.slice(0, 3)).toEqual(['1', '2', '3']);
    expect(lines.at(-1)).toBe('6000000');
    expect(stdout.endsWith('5999999\n6000000\n')).toBe(true);
  });
});

describe('the buffers', () => {
  it('TailBuffer keeps exactly the last bytes, however the stream is chunked, and never starts inside a character', () => {
    const pieces = ['abc', 'defghijklmn', 'o', 'pqrstuvwxyz'.repeat(3)];
    const tail = new TailBuffer(10);
    for (const piece of pieces) tail.push(Buffer.from(piece));
    expect(tail.toString()).toBe(pieces.join('').slice(-10));
    const blocks = new TailBuffer(100_000); // several 64 KiB blocks, chunks of every size
    let all = '';
    for (let i = 0; i < 3000; i++) {
      const piece = String(i).repeat((i % 97) + 1);
      all += piece;
      blocks.push(Buffer.from(piece));
    }
    expect(blocks.toString()).toBe(all.slice(-100_000));
    const big = new TailBuffer(MAX_CAPTURE);
    big.push(Buffer.alloc(3 * MiB, 'a'));
    big.push(Buffer.from('é'.repeat(10)));
    expect(big.toString().length).toBeLessThanOrEqual(MAX_CAPTURE);
    expect(big.toString().endsWith('é'.repeat(10))).toBe(true);
    const cut = new TailBuffer(5);
    cut.push(Buffer.from('€€')); // 6 bytes: the last 5 start inside the first €
    expect(cut.toString()).toBe('€');
  });

  it('LineSplitter: lines split across chunks and characters split across chunks come out whole; a long line is cut once', () => {
    const lines: string[] = [];
    const split = new LineSplitter((l) => lines.push(l), 8);
    const euro = Buffer.from('€');
    for (const chunk of [
      Buffer.from('ab'),
      Buffer.from('c\nd'),
      euro.subarray(0, 1),
      euro.subarray(1),
      Buffer.from('\n0123456789abcdef'),
      Buffer.from('ghij\nok\n'),
    ])
      split.push(chunk);
    expect(lines).toEqual(['abc', 'd€', '01234567… [truncated]', 'ok']);
  });
});
