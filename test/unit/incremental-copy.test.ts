// drivers/sync/incremental.ts: a copy into a folder copied into before writes only what changed in the
// source since, removes what the source no longer has, leaves what the target made itself, trusts no
// baseline it cannot read whole, and writes and removes through no link the target holds.
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { copyInIncremental, readBaseline } from '../../drivers/sync/incremental.js';
import { chownEntries, removeEntries } from '../../drivers/sync/safe-remove.js';

const temp = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-incr-${prefix}-`));

/** A source of `folders` × `files` files (d<i>/f<j>.ts), a target and a baseline file. */
function setup(folders = 4, files = 5) {
  const from = temp('from');
  for (let d = 0; d < folders; d++) {
    mkdirSync(join(from, `d${d}`));
    for (let f = 0; f < files; f++)
      writeFileSync(join(from, `d${d}`, `f${f}.ts`), `export const x = ${d * 100 + f};\n`);
  }
  const to = temp('to');
  const baseline = join(temp('baselines'), 'lease.json');
  const copy = (options: { maxDepth?: number } = {}) => copyInIncremental(from, to, { baseline, ...options });
  return { from, to, baseline, copy };
}

/** Sets a file's modification time to `seconds` after the epoch (a change a size check cannot see). */
const touch = (path: string, seconds: number) => utimesSync(path, seconds, seconds);

describe('copyInIncremental', () => {
  it('copies everything the first time, then nothing while the source is unchanged (1,000 files)', async () => {
    const { from, to, copy } = setup(50, 20);
    const first = await copy();
    expect(first.incremental).toBe(false);
    expect(first.result.copied).toBe(1000);
    const again = await copy();
    expect(again).toMatchObject({ incremental: true, removed: 0 });
    expect(again.result).toMatchObject({ copied: 0, unchanged: 1000, bytes: 0 });
    expect(readFileSync(join(to, 'd7', 'f3.ts'), 'utf8')).toBe(readFileSync(join(from, 'd7', 'f3.ts'), 'utf8'));
  });

  it('a changed, a new and a deleted file; a new and a deleted folder; a mode and a link changed', async () => {
    const { from, to, copy } = setup();
    symlinkSync('d0/f0.ts', join(from, 'link'));
    mkdirSync(join(from, 'old', 'deep'), { recursive: true });
    writeFileSync(join(from, 'old', 'deep', 'x'), 'x');
    await copy();
    writeFileSync(join(from, 'd1', 'f1.ts'), 'changed, longer than before\n');
    writeFileSync(join(from, 'd2', 'new.ts'), 'new');
    rmSync(join(from, 'd3', 'f4.ts'));
    mkdirSync(join(from, 'fresh', 'er'), { recursive: true });
    writeFileSync(join(from, 'fresh', 'er', 'y'), 'y');
    rmSync(join(from, 'old'), { recursive: true });
    chmodSync(join(from, 'd0', 'f2.ts'), 0o755);
    rmSync(join(from, 'link'));
    symlinkSync('d0/f1.ts', join(from, 'link'));

    const r = await copy();
    expect(r.incremental).toBe(true);
    expect(r.result.copied).toBe(5); // d1/f1.ts, d2/new.ts, fresh/er/y, d0/f2.ts, link
    expect(r.result.unchanged).toBe(20 - 1 - 1 - 1); // the 20 files less the changed, the deleted and the chmodded
    expect(r.removed).toBe(4); // d3/f4.ts, old/deep/x, old/deep, old
    expect(readFileSync(join(to, 'd1', 'f1.ts'), 'utf8')).toBe('changed, longer than before\n');
    expect(readFileSync(join(to, 'd2', 'new.ts'), 'utf8')).toBe('new');
    expect(existsSync(join(to, 'd3', 'f4.ts'))).toBe(false);
    expect(readFileSync(join(to, 'fresh', 'er', 'y'), 'utf8')).toBe('y');
    expect(existsSync(join(to, 'old'))).toBe(false);
    expect(statSync(join(to, 'd0', 'f2.ts')).mode & 0o111).toBe(0o111);
    expect(readlinkSync(join(to, 'link'))).toBe('d0/f1.ts');
    // The baseline now describes this copy: the next one writes nothing (19 + 2 new files + the link).
    expect((await copy()).result).toMatchObject({ copied: 0, unchanged: 22 });
  });

  it('a file of the same size whose content changed and whose time did: copied; touched only: not copied', async () => {
    const { from, to, baseline, copy } = setup();
    touch(join(from, 'd0', 'f0.ts'), 1_000_000);
    touch(join(from, 'd0', 'f1.ts'), 1_000_000);
    await copy();
    writeFileSync(join(from, 'd0', 'f0.ts'), 'export const x = 9;\n'); // same size, other bytes
    touch(join(from, 'd0', 'f0.ts'), 2_000_000);
    touch(join(from, 'd0', 'f1.ts'), 2_000_000); // same bytes, a new time
    const r = await copy();
    expect(r.result.copied).toBe(1);
    expect(readFileSync(join(to, 'd0', 'f0.ts'), 'utf8')).toBe('export const x = 9;\n');
    // The touched file's new time is in the baseline: it is not hashed again.
    expect((await readBaseline(baseline))?.files.get('d0/f1.ts')?.mtimeMs).toBe(2_000_000_000);
  });

  it('a change of the same size and time is not seen (the size and time check, as rsync)', async () => {
    const { from, to, copy } = setup();
    touch(join(from, 'd0', 'f0.ts'), 1_000_000);
    await copy();
    writeFileSync(join(from, 'd0', 'f0.ts'), 'export const x = 9;\n');
    touch(join(from, 'd0', 'f0.ts'), 1_000_000);
    expect((await copy()).result.copied).toBe(0);
    expect(readFileSync(join(to, 'd0', 'f0.ts'), 'utf8')).toBe('export const x = 0;\n');
  });

  it('what the target made or changed itself stays, unless the source changed it too', async () => {
    const { from, to, copy } = setup();
    await copy();
    mkdirSync(join(to, 'node_modules', 'x'), { recursive: true });
    writeFileSync(join(to, 'node_modules', 'x', 'index.js'), 'module');
    writeFileSync(join(to, 'd0', 'made.txt'), 'made');
    writeFileSync(join(to, 'd0', 'f0.ts'), 'edited in the sandbox');
    writeFileSync(join(to, 'd0', 'f1.ts'), 'edited in the sandbox');
    writeFileSync(join(from, 'd0', 'f1.ts'), 'edited on the host');
    rmSync(join(from, 'd1'), { recursive: true }); // its folder holds something the target made: it stays
    writeFileSync(join(to, 'd1', 'made.txt'), 'made');
    const r = await copy();
    expect(r.result.copied).toBe(1);
    expect(readFileSync(join(to, 'node_modules', 'x', 'index.js'), 'utf8')).toBe('module');
    expect(readFileSync(join(to, 'd0', 'made.txt'), 'utf8')).toBe('made');
    expect(readFileSync(join(to, 'd0', 'f0.ts'), 'utf8')).toBe('edited in the sandbox');
    expect(readFileSync(join(to, 'd0', 'f1.ts'), 'utf8')).toBe('edited on the host');
    expect(readdirSync(join(to, 'd1'))).toEqual(['made.txt']);
  });

  it('a file that became a folder, and a folder that became a file', async () => {
    const { from, to, copy } = setup(2, 2);
    writeFileSync(join(from, 'was-file'), 'file');
    await copy();
    rmSync(join(from, 'was-file'));
    mkdirSync(join(from, 'was-file'));
    writeFileSync(join(from, 'was-file', 'inside'), 'inside');
    rmSync(join(from, 'd1'), { recursive: true });
    writeFileSync(join(from, 'd1'), 'now a file');
    await copy();
    expect(readFileSync(join(to, 'was-file', 'inside'), 'utf8')).toBe('inside');
    expect(readFileSync(join(to, 'd1'), 'utf8')).toBe('now a file');
    expect((await copy()).result.copied).toBe(0);
  });

  it('a baseline missing, malformed, cut short, or of another target folder: a full copy', async () => {
    const { from, to, baseline, copy } = setup(2, 2);
    await copy();
    for (const spoil of [
      () => rmSync(baseline),
      () => writeFileSync(baseline, '{"version":1,'),
      () => writeFileSync(baseline, JSON.stringify({ version: 1, target: { dev: 1, ino: 1 }, files: [], dirs: [] })),
      () => {
        const data = JSON.parse(readFileSync(baseline, 'utf8'));
        data.files[0].path = '../escape';
        writeFileSync(baseline, JSON.stringify(data));
      },
    ]) {
      spoil();
      writeFileSync(join(to, 'd0', 'f0.ts'), 'edited in the sandbox');
      const r = await copy();
      expect(r.incremental).toBe(false);
      expect(r.result.copied).toBe(4);
      expect(readFileSync(join(to, 'd0', 'f0.ts'), 'utf8')).toBe(readFileSync(join(from, 'd0', 'f0.ts'), 'utf8'));
      expect((await copy()).incremental).toBe(true);
    }
    // The baseline used for another target folder: a full copy, not a copy of nothing.
    const other = temp('other');
    const r = await copyInIncremental(from, other, { baseline });
    expect(r.incremental).toBe(false);
    expect(readdirSync(join(other, 'd1')).sort()).toEqual(['f0.ts', 'f1.ts']);
  });

  it('a baseline this process wrote is read back from memory only while the file is still the one it wrote', async () => {
    const { from, baseline, copy } = setup(2, 2);
    await copy();
    const written = await readBaseline(baseline);
    expect(await readBaseline(baseline)).toBe(written); // the same object: not parsed again
    // Changed on disk to the same size, its modification time put back (to the microsecond).
    const { mtime } = statSync(baseline);
    const text = readFileSync(baseline, 'utf8');
    const sha = written!.files.get('d0/f0.ts')!.sha256;
    const other = `${sha[0] === 'a' ? 'b' : 'a'}${sha.slice(1)}`;
    writeFileSync(baseline, text.replace(sha, other));
    utimesSync(baseline, mtime, mtime);
    expect(statSync(baseline).size).toBe(text.length);
    expect(Math.abs(statSync(baseline).mtimeMs - mtime.getTime())).toBeLessThan(0.01);
    const reread = await readBaseline(baseline);
    expect(reread).not.toBe(written);
    expect(reread!.files.get('d0/f0.ts')!.sha256).toBe(other);
    // Replaced by another file (a new inode): read from disk too.
    renameSync(baseline, `${baseline}.old`);
    writeFileSync(baseline, readFileSync(`${baseline}.old`));
    expect(await readBaseline(baseline)).not.toBe(reread);
    expect(readdirSync(from)).toEqual(['d0', 'd1']);
  });

  it('the baseline is root-only-readable (0600), and a copy cut short leaves none', async () => {
    const { from, to, baseline, copy } = setup(2, 2);
    await copy();
    expect(statSync(baseline).mode & 0o777).toBe(0o600);
    writeFileSync(join(from, 'd0', 'new'), 'new');
    const controller = new AbortController();
    controller.abort(new Error('stopped'));
    await expect(copyInIncremental(from, to, { baseline, signal: controller.signal })).rejects.toThrow('stopped');
    expect(existsSync(baseline)).toBe(false);
    expect((await copy()).incremental).toBe(false);
  });

  it('over the depth limit: fails as a full copy would, before writing anything', async () => {
    const { from, to, copy } = setup(1, 1);
    await copy();
    mkdirSync(join(from, 'a', 'b', 'c'), { recursive: true });
    writeFileSync(join(from, 'a', 'b', 'c', 'deep'), 'deep');
    await expect(copy({ maxDepth: 2 })).rejects.toThrow('nested folders');
    expect(existsSync(join(to, 'a'))).toBe(false);
  });

  // ATTACK: between two copies the target (a sandbox) swaps a folder for a link to a folder outside it.
  // A copy that writes and unlinks by path (join(to, rel)) would write into and delete from that folder.
  it('a folder of the target swapped for a link out of it: nothing is written or removed through the link', async () => {
    const { from, to, copy } = setup(2, 3);
    const outside = temp('outside');
    for (const name of ['f0.ts', 'f1.ts', 'f2.ts', 'keep']) writeFileSync(join(outside, name), `outside ${name}`);
    chmodSync(outside, 0o700);
    await copy();
    renameSync(join(to, 'd0'), join(to, 'd0.moved'));
    symlinkSync(outside, join(to, 'd0'));
    renameSync(join(to, 'd1'), join(to, 'd1.moved'));
    symlinkSync(outside, join(to, 'd1'));
    writeFileSync(join(from, 'd0', 'f0.ts'), 'changed on the host');
    writeFileSync(join(from, 'd0', 'f9.ts'), 'new on the host');
    rmSync(join(from, 'd0', 'f1.ts'));
    rmSync(join(from, 'd1'), { recursive: true }); // its files and itself are to be removed
    const r = await copy();
    expect(r.incremental).toBe(true);
    expect(readdirSync(outside).sort()).toEqual(['f0.ts', 'f1.ts', 'f2.ts', 'keep']);
    for (const name of readdirSync(outside)) expect(readFileSync(join(outside, name), 'utf8')).toBe(`outside ${name}`);
    // The link to d0 was replaced by a folder holding what changed; the link to d1 is the target's own
    // (not an entry of the baseline's kind) and stays a link.
    expect(lstatSync(join(to, 'd0')).isDirectory()).toBe(true);
    expect(readdirSync(join(to, 'd0')).sort()).toEqual(['f0.ts', 'f9.ts']);
    expect(readFileSync(join(to, 'd0', 'f0.ts'), 'utf8')).toBe('changed on the host');
    expect(lstatSync(join(to, 'd1')).isSymbolicLink()).toBe(true);
  });
});

describe('removeEntries and chownEntries (single entries, reached through handles)', () => {
  it('removes files and links, folders once empty; goes through no link; refuses a path out of the folder', async () => {
    const root = temp('entries');
    const outside = temp('outside');
    writeFileSync(join(outside, 'f'), 'outside');
    mkdirSync(join(root, 'a', 'b'), { recursive: true });
    writeFileSync(join(root, 'a', 'b', 'f'), 'f');
    writeFileSync(join(root, 'a', 'kept'), 'made by the target');
    symlinkSync(outside, join(root, 'link')); // a folder of the baseline, now a link out
    symlinkSync(join(outside, 'f'), join(root, 'a', 'l'));
    const removed = await removeEntries(root, [
      { path: 'a/b/f', kind: 'file' },
      { path: 'a/b', kind: 'folder' },
      { path: 'a/l', kind: 'file' },
      { path: 'a', kind: 'folder' }, // not empty: stays
      { path: 'link/f', kind: 'file' },
      { path: 'link', kind: 'folder' },
      { path: 'absent/x', kind: 'file' },
    ]);
    expect(removed).toBe(3);
    expect(readdirSync(join(root, 'a'))).toEqual(['kept']);
    expect(lstatSync(join(root, 'link')).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(outside, 'f'), 'utf8')).toBe('outside');
    await expect(removeEntries(root, [{ path: 'a/../link', kind: 'file' }])).rejects.toThrow('not a path inside');
    await expect(removeEntries(root, [{ path: '/etc/passwd', kind: 'file' }])).rejects.toThrow('not a path inside');
  });

  it.runIf(process.getuid?.() === 0)('chownEntries gives a link itself, and nothing through a link', async () => {
    const root = temp('chown');
    const outside = temp('outside');
    writeFileSync(join(outside, 'f'), 'outside');
    writeFileSync(join(root, 'f'), 'f');
    symlinkSync(join(outside, 'f'), join(root, 'l'));
    symlinkSync(outside, join(root, 'd'));
    await chownEntries(root, ['f', 'l', 'd/f'], 65534, 65534);
    expect(lstatSync(join(root, 'f')).uid).toBe(65534);
    expect(lstatSync(join(root, 'l')).uid).toBe(65534);
    expect(statSync(join(outside, 'f')).uid).toBe(0);
  });
});
