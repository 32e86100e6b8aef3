// ATTACK: a workspace that costs the sandbox nothing but the host a great deal once synced back: a 900 MiB
// sparse file (no block on disk) comes back as 900 MiB of real data.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { safeCopyBack } from '../../drivers/sync/safe-copy.js';

const MiB = 1024 ** 2;
const dir = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-sparse-${prefix}-`));
const onDisk = (path: string) => statSync(path).blocks * 512;

function byteAt(path: string, position: number): string {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(5);
    readSync(fd, b, 0, 5, position);
    return b.toString();
  } finally {
    closeSync(fd);
  }
}

describe('sparse files', () => {
  it('a 900 MiB sparse file comes back with its holes: no more on disk than its data', async () => {
    const from = dir('from');
    const to = dir('to');
    const big = join(from, 'big.img');
    execFileSync('truncate', ['-s', '900M', big]);
    const fd = openSync(big, 'r+');
    writeSync(fd, 'hello', 300 * MiB);
    closeSync(fd);
    expect(onDisk(big)).toBeLessThan(MiB);
    const result = await safeCopyBack(from, to);
    const copy = join(to, 'big.img');
    expect(result.copied).toBe(1);
    expect(statSync(copy).size).toBe(900 * MiB);
    expect(onDisk(copy)).toBeLessThan(4 * MiB);
    expect(byteAt(copy, 300 * MiB)).toBe('hello');
    expect(byteAt(copy, 600 * MiB)).toBe('\0\0\0\0\0');
  });
});
