// drivers/sync/safe-remove.ts: deleting and chowning an agent's tree never follows a link, at any depth,
// whatever is swapped in while the walk runs; deep, locked and oddly named trees go all the same.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chownTree, removeTree } from '../../drivers/sync/safe-remove.js';

const isRoot = process.getuid?.() === 0;
const temp = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-remove-${prefix}-`));

/** A folder only its owner may enter, with files: what a swapped link points at. */
function outsideFolder(): { path: string; intact: () => boolean } {
  const path = temp('outside');
  for (let i = 0; i < 5; i++) writeFileSync(join(path, `keep-${i}`), `keep ${i}`);
  chmodSync(path, 0o700);
  const before = statSync(path);
  return {
    path,
    intact: () =>
      existsSync(path) &&
      readdirSync(path).length === 5 &&
      statSync(path).uid === before.uid &&
      statSync(join(path, 'keep-0')).uid === before.uid,
  };
}

/** A tree with folders a, a/b, a/b/c, each holding files, and a link out. */
function tree(outside: string): string {
  const root = temp('tree');
  mkdirSync(join(root, 'a', 'b', 'c'), { recursive: true });
  for (const d of ['a', 'a/b', 'a/b/c']) for (let i = 0; i < 3; i++) writeFileSync(join(root, d, `f${i}`), 'x');
  symlinkSync(outside, join(root, 'a', 'out'));
  return root;
}

/** Swaps folder `path` for a link to `target` (the folder moves aside, under a name the walk has not read yet). */
function swapForLink(path: string, target: string): void {
  renameSync(path, `${path}.moved`);
  symlinkSync(target, path);
}

describe('removeTree', () => {
  it('a link swapped in for a folder just before it is opened is removed, never entered', async () => {
    const outside = outsideFolder();
    const root = tree(outside.path);
    const swapped: string[] = [];
    await removeTree(root, {
      hooks: {
        beforeOpen: (rel) => {
          if (rel.endsWith('.moved')) return; // the folder moved aside is removed as it is
          swapped.push(rel);
          swapForLink(join(root, rel), outside.path);
        },
      },
    });
    expect(swapped.length).toBeGreaterThan(0);
    expect(existsSync(root)).toBe(false);
    expect(outside.intact()).toBe(true);
  });

  it('a folder swapped for a link while the walk is inside it: the link goes, the folder is found and goes', async () => {
    const outside = outsideFolder();
    const root = tree(outside.path);
    let swaps = 0;
    await removeTree(root, {
      hooks: {
        afterOpen: (rel) => {
          if (rel !== 'a/b') return;
          swaps++;
          swapForLink(join(root, rel), outside.path);
        },
      },
    });
    expect(swaps).toBe(1);
    expect(existsSync(root)).toBe(false);
    expect(outside.intact()).toBe(true);
  });

  it('a folder moved elsewhere while the walk is inside it: the walk never climbs above the tree', async () => {
    const outside = outsideFolder();
    // The tree sits inside a folder of its own, whose other entries must survive.
    const holder = temp('holder');
    writeFileSync(join(holder, 'sibling'), 'keep');
    const root = join(holder, 'tree');
    mkdirSync(join(root, 'x', 'y', 'z'), { recursive: true });
    mkdirSync(join(root, 'deep', '1', '2', '3', '4', '5'), { recursive: true });
    writeFileSync(join(root, 'x', 'y', 'z', 'f'), 'x');
    symlinkSync(outside.path, join(root, 'x', 'out'));
    let moved = false;
    await removeTree(root, {
      hooks: {
        afterOpen: (rel) => {
          // Inside x/y/z (three below the top), the folder moves five below it: `..` is no longer x/y.
          if (rel !== 'x/y/z' || moved) return;
          moved = true;
          renameSync(join(root, 'x', 'y', 'z'), join(root, 'deep', '1', '2', '3', '4', '5', 'z'));
          symlinkSync(outside.path, join(root, 'x', 'y', 'z'));
        },
      },
    });
    expect(moved).toBe(true);
    expect(existsSync(root)).toBe(false);
    expect(readdirSync(holder)).toEqual(['sibling']);
    expect(outside.intact()).toBe(true);
  });

  it('10,000-deep nesting, mode-000 folders, newline and non-UTF-8 names, FIFOs, links out', async () => {
    const outside = outsideFolder();
    const root = temp('hostile');
    // Built by perl: a path 20,000 characters long is past PATH_MAX for any single call.
    execFileSync('perl', [
      '-e',
      String.raw`
      chdir $ARGV[0] or die; mkdir 'deep' or die; chdir 'deep' or die;
      for my $i (1 .. 10000) { mkdir 'd' or die "$i: $!"; chdir 'd' or die; open(my $f, '>', 'f') or die; close $f; }
      for my $i (reverse 1 .. 10000) { chdir '..' or die; chmod(0, 'd') if $i % 1000 == 0; }
      chdir $ARGV[0] or die;
      mkdir "new\nline" or die; open(my $f, '>', "new\nline/file\nname") or die; close $f;
      open($f, '>', "bad\xffname") or die; close $f;
      mkdir "dir\xfe" or die; open($f, '>', "dir\xfe/x") or die; close $f;
      mkdir 'locked' or die; mkdir 'locked/inner' or die; open($f, '>', 'locked/inner/f') or die; close $f;
      chmod(0, 'locked/inner') or die; chmod(0, 'locked') or die;
      system('mkfifo', 'pipe') == 0 or die;
      symlink($ARGV[1], 'out') or die; symlink($ARGV[1] . '/keep-0', 'out-file') or die;
      `,
      root,
      outside.path,
    ]);
    await removeTree(root);
    expect(existsSync(root)).toBe(false);
    expect(outside.intact()).toBe(true);
  }, 120_000);

  it('a link or a file at the top is unlinked, not followed; an absent path is fine', async () => {
    const outside = outsideFolder();
    const holder = temp('top');
    symlinkSync(outside.path, join(holder, 'link'));
    writeFileSync(join(holder, 'file'), 'x');
    await removeTree(join(holder, 'link'));
    await removeTree(join(holder, 'file'));
    await removeTree(join(holder, 'absent'));
    expect(readdirSync(holder)).toEqual([]);
    expect(outside.intact()).toBe(true);
  });

  it.runIf(isRoot)('as a worker that is not root: mode-000 folders are opened through their own handle', async () => {
    const root = temp('nonroot');
    mkdirSync(join(root, 'locked', 'inner'), { recursive: true });
    writeFileSync(join(root, 'locked', 'inner', 'f'), 'x');
    chmodSync(join(root, 'locked', 'inner'), 0);
    chmodSync(join(root, 'locked'), 0);
    execFileSync('chown', ['-R', '65534:65534', root]);
    chmodSync(root, 0o755);
    // The module itself, loaded by a plain node as uid 65534.
    const module = new URL('../../drivers/sync/safe-remove.ts', import.meta.url).pathname;
    execFileSync(
      process.execPath,
      ['--import', 'tsx', '-e', `import(${JSON.stringify(module)}).then((m) => m.removeTree(${JSON.stringify(root)}))`],
      { uid: 65534, gid: 65534, cwd: new URL('../..', import.meta.url).pathname, stdio: 'pipe' },
    );
    expect(existsSync(root)).toBe(false);
  });
});

describe('chownTree', () => {
  it.runIf(isRoot)(
    'gives every entry to the uid, links as links; a link swapped in mid-walk is never followed',
    async () => {
      const outside = outsideFolder();
      const root = tree(outside.path);
      let swapped = 0;
      await chownTree(root, 65534, 65534, {
        hooks: {
          beforeOpen: (rel) => {
            if (rel !== 'a/b') return;
            swapped++;
            swapForLink(join(root, rel), outside.path);
          },
        },
      });
      expect(swapped).toBe(1);
      expect(outside.intact()).toBe(true);
      expect(lstatSync(join(root, 'a', 'out')).uid).toBe(65534);
      expect(lstatSync(join(root, 'a', 'b')).uid).toBe(65534); // the link that took its place
      expect(statSync(join(root, 'a', 'f0')).uid).toBe(65534);
      expect(statSync(root).uid).toBe(65534);
    },
  );
});
