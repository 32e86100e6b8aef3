// ATTACK: a workspace that costs the sandbox nothing but the host a great deal once synced back:
//  - a 900 MiB sparse file (no block on disk) came back as 900 MiB of real data;
//  - very many empty files (a million in the issue) and very deep nesting were walked and recreated
//    without bound. ENVRUN_MAX_WORKSPACE_FILES and ENVRUN_MAX_WORKSPACE_DEPTH bound them: over a limit,
//    the sync-back fails before writing anything, as it does over ENVRUN_MAX_WORKSPACE_BYTES. (The tests
//    set small limits through the options to stay fast.)
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  readFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  readdirSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SyncTooLargeError, maxWorkspaceDepth, maxWorkspaceFiles, safeCopyBack } from '../../drivers/sync/safe-copy.js';

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

  it('its apparent size counts against the byte limit', async () => {
    const from = dir('from');
    const to = dir('to');
    execFileSync('truncate', ['-s', '10M', join(from, 'big.img')]);
    await expect(safeCopyBack(from, to, { maxBytes: 5 * MiB })).rejects.toThrow(SyncTooLargeError);
    expect(readdirSync(to)).toEqual([]);
  });
});

describe('file count and depth', () => {
  it('very many empty files: over the file limit, nothing is written', async () => {
    const from = dir('from');
    const to = dir('to');
    for (let i = 0; i < 30; i++) {
      mkdirSync(join(from, `d${i}`));
      for (let j = 0; j < 100; j++) writeFileSync(join(from, `d${i}`, `f${j}`), '');
    }
    await expect(safeCopyBack(from, to, { maxFiles: 1000 })).rejects.toThrow(SyncTooLargeError);
    expect(readdirSync(to)).toEqual([]);
  });

  it('very deep nesting: over the depth limit, nothing is written', async () => {
    const from = dir('from');
    const to = dir('to');
    writeFileSync(join(from, 'top.txt'), 'top');
    mkdirSync(join(from, ...Array.from({ length: 40 }, () => 'd')), { recursive: true });
    await expect(safeCopyBack(from, to, { maxDepth: 10 })).rejects.toThrow(SyncTooLargeError);
    expect(readdirSync(to)).toEqual([]);
  });
});

describe('sparse copies and limits, exactly (after the fix)', () => {
  const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

  it('data at odd offsets, zeros inside data, a hole at the end: the copy is byte for byte the same', async () => {
    const from = dir('from');
    const to = dir('to');
    const file = join(from, 'mixed.bin');
    const fd = openSync(file, 'w');
    writeSync(fd, randomBytes(5000), 0, 5000, 3); // unaligned data across a block edge
    writeSync(fd, Buffer.alloc(10_000), 0, 10_000, 9000); // written zeros
    writeSync(fd, randomBytes(100), 0, 100, 3 * MiB + 17);
    closeSync(fd);
    execFileSync('truncate', ['-s', String(5 * MiB + 1), file]); // a hole at the end
    const result = await safeCopyBack(from, to);
    expect(result).toMatchObject({ copied: 1, bytes: 5 * MiB + 1 });
    expect(statSync(join(to, 'mixed.bin')).size).toBe(5 * MiB + 1);
    expect(sha(join(to, 'mixed.bin'))).toBe(sha(file));
    expect(onDisk(join(to, 'mixed.bin'))).toBeLessThan(MiB);
    // The next sync-back finds it unchanged.
    expect(await safeCopyBack(from, to)).toMatchObject({ copied: 0, unchanged: 1 });
  });

  it('at the limits exactly, the copy goes through', async () => {
    const from = dir('from');
    const to = dir('to');
    mkdirSync(join(from, ...Array.from({ length: 10 }, () => 'd')), { recursive: true });
    for (let i = 0; i < 9; i++) writeFileSync(join(from, `f${i}`), '');
    // 10 folders + 9 files = 19 entries, nested 10 deep.
    await expect(safeCopyBack(from, to, { maxFiles: 18 })).rejects.toThrow(
      'the workspace holds more than the limit of 18 files, folders and links (ENVRUN_MAX_WORKSPACE_FILES); nothing was copied',
    );
    await expect(safeCopyBack(from, to, { maxDepth: 9 })).rejects.toThrow(
      'the workspace holds more than the limit of 9 nested folders (ENVRUN_MAX_WORKSPACE_DEPTH); nothing was copied',
    );
    expect(readdirSync(to)).toEqual([]);
    const result = await safeCopyBack(from, to, { maxFiles: 19, maxDepth: 10 });
    expect(result).toMatchObject({ copied: 9, createdDirs: 10 });
  });

  it('the limits come from ENVRUN_MAX_WORKSPACE_FILES and ENVRUN_MAX_WORKSPACE_DEPTH, a bad value named', () => {
    expect(maxWorkspaceFiles({})).toBe(1_000_000);
    expect(maxWorkspaceFiles({ ENVRUN_MAX_WORKSPACE_FILES: '5000' })).toBe(5000);
    expect(() => maxWorkspaceFiles({ ENVRUN_MAX_WORKSPACE_FILES: 'many' })).toThrow('ENVRUN_MAX_WORKSPACE_FILES');
    expect(maxWorkspaceDepth({})).toBe(128);
    expect(maxWorkspaceDepth({ ENVRUN_MAX_WORKSPACE_DEPTH: '300' })).toBe(300);
    expect(() => maxWorkspaceDepth({ ENVRUN_MAX_WORKSPACE_DEPTH: '0' })).toThrow('ENVRUN_MAX_WORKSPACE_DEPTH');
    expect(() => maxWorkspaceDepth({ ENVRUN_MAX_WORKSPACE_DEPTH: '5000' })).toThrow(
      /ENVRUN_MAX_WORKSPACE_DEPTH: .*1000/,
    );
  });
});
