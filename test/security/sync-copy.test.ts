// The copy routine every sync-back (and a sandbox upload) goes through, on a real filesystem, fed what a
// hostile workspace can hold: links out of it and into .git, links and hard links planted in the target,
// FIFOs, sockets, devices, setuid files, git metadata under any name, more data than allowed.
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SyncTooLargeError, maxWorkspaceBytes, safeCopyBack, safeCopyIn } from '../../drivers/sync/safe-copy.js';

const dir = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-copy-${prefix}-`));
const tree = (root: string) => readdirSync(root, { recursive: true }).map(String).sort();

/** A listening Unix socket at `path`, made by a child (kept open until the copy is done). */
function socketAt(path: string): void {
  execFileSync('python3', ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', path]);
}

describe('safeCopyBack', () => {
  it('never writes through a link in the target: a folder link and a file link are replaced, their targets untouched', async () => {
    const outside = dir('outside');
    writeFileSync(join(outside, 'victim.txt'), 'original');
    const from = dir('from');
    const to = dir('to');
    symlinkSync(outside, join(to, 'link'));
    symlinkSync(join(outside, 'victim.txt'), join(to, 'file-link'));
    mkdirSync(join(from, 'link'));
    writeFileSync(join(from, 'link', 'pwned.txt'), 'pwned');
    writeFileSync(join(from, 'link', 'victim.txt'), 'pwned');
    writeFileSync(join(from, 'file-link'), 'pwned');
    const result = await safeCopyBack(from, to);
    expect(readdirSync(outside)).toEqual(['victim.txt']);
    expect(readFileSync(join(outside, 'victim.txt'), 'utf8')).toBe('original');
    expect(lstatSync(join(to, 'link')).isDirectory()).toBe(true);
    expect(lstatSync(join(to, 'file-link')).isFile()).toBe(true);
    expect(result).toMatchObject({ copied: 3, skippedCount: 0 });
  });

  it('never writes through a hard link in the target: the file is replaced, the other name keeps its content', async () => {
    const outside = dir('outside');
    writeFileSync(join(outside, 'victim.txt'), 'original');
    const from = dir('from');
    const to = dir('to');
    linkSync(join(outside, 'victim.txt'), join(to, 'hard.txt'));
    writeFileSync(join(from, 'hard.txt'), 'pwned');
    await safeCopyBack(from, to);
    expect(readFileSync(join(outside, 'victim.txt'), 'utf8')).toBe('original');
    expect(readFileSync(join(to, 'hard.txt'), 'utf8')).toBe('pwned');
  });

  it('links out of the tree or into .git are skipped and reported; links inside it are kept as links', async () => {
    const from = dir('from');
    const to = dir('to');
    writeFileSync(join(from, 'a.txt'), 'a');
    mkdirSync(join(from, 'sub'));
    symlinkSync('/etc/passwd', join(from, 'absolute'));
    symlinkSync('../../etc', join(from, 'sub', 'climbs'));
    symlinkSync('../a.txt', join(from, 'sub', 'inside'));
    symlinkSync('.git/hooks', join(from, 'hooks'));
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([
      { path: 'absolute', reason: 'symlink leading out of the workspace' },
      { path: 'hooks', reason: 'symlink leading into git metadata' },
      { path: 'sub/climbs', reason: 'symlink leading out of the workspace' },
    ]);
    expect(readlinkSync(join(to, 'sub', 'inside'))).toBe('../a.txt');
    expect(tree(to)).toEqual(['a.txt', 'sub', 'sub/inside']);
  });

  it('FIFOs, sockets and device nodes are skipped and reported, never opened: the copy finishes', async () => {
    const from = dir('from');
    const to = dir('to');
    execFileSync('mkfifo', [join(from, 'fifo')]);
    mkdirSync(join(from, 'deep'));
    execFileSync('mkfifo', [join(from, 'deep', 'fifo')]);
    socketAt(join(from, 'sock'));
    execFileSync('mknod', [join(from, 'null'), 'c', '1', '3']);
    writeFileSync(join(from, 'ok.txt'), 'ok');
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([
      { path: 'deep/fifo', reason: 'fifo' },
      { path: 'fifo', reason: 'fifo' },
      { path: 'null', reason: 'character device' },
      { path: 'sock', reason: 'socket' },
    ]);
    expect(tree(to)).toEqual(['deep', 'ok.txt']);
  });

  it('a FIFO with a writer waiting on it is not read either', async () => {
    const from = dir('from');
    const to = dir('to');
    execFileSync('mkfifo', [join(from, 'fifo')]);
    const writer = spawn('sh', ['-c', `yes > ${join(from, 'fifo')}`], { stdio: 'ignore' });
    try {
      const result = await safeCopyBack(from, to);
      expect(result.skipped).toEqual([{ path: 'fifo', reason: 'fifo' }]);
    } finally {
      writer.kill('SIGKILL');
    }
  });

  it('setuid, setgid, sticky and group/other write bits are dropped; as root, owners come from the target folder', async () => {
    const from = dir('from');
    const to = dir('to');
    for (const [name, mode] of [
      ['suid', 0o4755],
      ['sgid', 0o2711],
      ['world', 0o666],
      ['private', 0o600],
      ['readonly', 0o444],
    ] as const) {
      writeFileSync(join(from, name), name);
      chmodSync(join(from, name), mode);
    }
    mkdirSync(join(from, 'sticky'));
    chmodSync(join(from, 'sticky'), 0o1777);
    execFileSync('chown', ['-R', '12345:12345', from]);
    execFileSync('chown', ['23456:23456', to]);
    await safeCopyBack(from, to);
    const mode = (name: string) => lstatSync(join(to, name)).mode & 0o7777;
    expect([mode('suid'), mode('sgid'), mode('world'), mode('private'), mode('readonly'), mode('sticky')]).toEqual([
      0o755, 0o711, 0o644, 0o600, 0o644, 0o755,
    ]);
    if (process.getuid?.() === 0) {
      for (const name of ['suid', 'sticky']) expect(statSync(join(to, name))).toMatchObject({ uid: 23456, gid: 23456 });
    }
  });

  it("nothing of git: .git anywhere and in any case, folders that look like a git directory; the target's own .git stays as it was", async () => {
    const from = dir('from');
    const to = dir('to');
    execFileSync('git', ['init', '-q', to]);
    const gitBefore = tree(join(to, '.git'));
    execFileSync('git', ['init', '-q', from]);
    writeFileSync(join(from, '.git', 'config'), '[core]\n\tfsmonitor = touch /tmp/pwned\n');
    writeFileSync(join(from, '.git', 'hooks', 'post-checkout'), '#!/bin/sh\ntouch /tmp/pwned\n');
    mkdirSync(join(from, 'a', 'b', '.GIT'), { recursive: true });
    writeFileSync(join(from, 'a', 'b', '.GIT', 'config'), 'x');
    writeFileSync(join(from, 'a', '.Git'), 'gitdir: /tmp/elsewhere\n');
    execFileSync('cp', ['-r', join(from, '.git'), join(from, 'renamed')]);
    // A bare-looking folder split over two runs: objects/refs already in the target, HEAD and config now.
    mkdirSync(join(to, 'half', 'objects'), { recursive: true });
    mkdirSync(join(to, 'half', 'refs'));
    mkdirSync(join(from, 'half'));
    writeFileSync(join(from, 'half', 'HEAD'), 'ref: refs/heads/main\n');
    writeFileSync(join(from, 'half', 'config'), '[core]\n\tfsmonitor = touch /tmp/pwned\n');
    writeFileSync(join(from, 'a', 'work.txt'), 'work');
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([
      { path: '.git', reason: 'git metadata is never synced back' },
      { path: 'a/.Git', reason: 'git metadata is never synced back' },
      { path: 'a/b/.GIT', reason: 'git metadata is never synced back' },
      { path: 'half', reason: 'looks like a git directory (HEAD with objects, refs or commondir)' },
      { path: 'renamed', reason: 'looks like a git directory (HEAD with objects, refs or commondir)' },
    ]);
    expect(tree(join(to, '.git'))).toEqual(gitBefore);
    expect(readFileSync(join(to, 'a', 'work.txt'), 'utf8')).toBe('work');
    expect(existsSync(join(to, 'renamed'))).toBe(false);
    expect(tree(join(to, 'half'))).toEqual(['objects', 'refs']);
  });

  it("a workspace root that would look like a git directory gets none of git's names", async () => {
    const from = dir('from');
    const to = dir('to');
    writeFileSync(join(from, 'HEAD'), 'ref: refs/heads/main\n');
    mkdirSync(join(from, 'objects'));
    mkdirSync(join(from, 'refs'));
    writeFileSync(join(from, 'config'), '[core]\n\tfsmonitor = touch /tmp/pwned\n');
    writeFileSync(join(from, 'readme.md'), 'hi');
    const result = await safeCopyBack(from, to);
    expect(result.skipped.map((s) => s.path)).toEqual(['HEAD', 'config', 'objects', 'refs']);
    expect(tree(to)).toEqual(['readme.md']);
  });

  it('over the size limit nothing is written; the limit comes from ENVRUN_MAX_WORKSPACE_BYTES', async () => {
    const from = dir('from');
    const to = dir('to');
    writeFileSync(join(to, 'mine.txt'), 'mine');
    writeFileSync(join(from, 'a.txt'), 'a'.repeat(600));
    writeFileSync(join(from, 'b.txt'), 'b'.repeat(600));
    await expect(safeCopyBack(from, to, { maxBytes: 1000 })).rejects.toThrow(SyncTooLargeError);
    expect(tree(to)).toEqual(['mine.txt']);
    expect(maxWorkspaceBytes({})).toBe(2 * 1024 ** 3);
    expect(maxWorkspaceBytes({ ENVRUN_MAX_WORKSPACE_BYTES: '1000' })).toBe(1000);
    expect(() => maxWorkspaceBytes({ ENVRUN_MAX_WORKSPACE_BYTES: '2GB' })).toThrow(
      'ENVRUN_MAX_WORKSPACE_BYTES: must be a positive integer',
    );
    const result = await safeCopyBack(from, to, { maxBytes: 1200 });
    expect(result).toMatchObject({ copied: 2, bytes: 1200 });
  });

  it('unchanged files are left alone; changed ones replaced with their times', async () => {
    const from = dir('from');
    const to = dir('to');
    writeFileSync(join(from, 'same.txt'), 'same');
    writeFileSync(join(from, 'changed.txt'), 'v2');
    await safeCopyBack(from, to);
    const inode = statSync(join(to, 'same.txt')).ino;
    writeFileSync(join(from, 'changed.txt'), 'v3');
    const result = await safeCopyBack(from, to);
    expect(result).toMatchObject({ copied: 1, unchanged: 1 });
    expect(statSync(join(to, 'same.txt')).ino).toBe(inode);
    expect(readFileSync(join(to, 'changed.txt'), 'utf8')).toBe('v3');
    expect(
      Math.abs(statSync(join(to, 'changed.txt')).mtimeMs - statSync(join(from, 'changed.txt')).mtimeMs),
    ).toBeLessThan(2);
    expect(readdirSync(to).filter((n) => n.includes('envrun-sync'))).toEqual([]); // no temporary left
  });

  it('a cancelled copy stops before writing anything more', async () => {
    const from = dir('from');
    const to = dir('to');
    for (let i = 0; i < 50; i++) writeFileSync(join(from, `f${i}.txt`), 'x');
    await expect(safeCopyBack(from, to, { signal: AbortSignal.abort(new Error('release cancelled')) })).rejects.toThrow(
      'release cancelled',
    );
    expect(readdirSync(to)).toEqual([]);
  });

  it('a target that is not there fails plainly', async () => {
    await expect(safeCopyBack(dir('from'), '/nonexistent/envrun')).rejects.toThrow(
      'target /nonexistent/envrun is not there',
    );
  });
});

describe('safeCopyIn (a sandbox upload)', () => {
  it('copies .git and every link as it is, but writes through no link an earlier run left in the sandbox folder', async () => {
    const outside = dir('outside');
    const from = dir('from');
    const to = dir('to');
    execFileSync('git', ['init', '-q', from]);
    mkdirSync(join(from, 'src'));
    writeFileSync(join(from, 'src', 'main.ts'), 'code');
    symlinkSync('/usr/bin/env', join(from, 'abs-link'));
    symlinkSync(outside, join(to, 'src')); // left by an earlier run of a reused sandbox
    execFileSync('mkfifo', [join(from, 'fifo')]);
    const result = await safeCopyIn(from, to);
    expect(readdirSync(outside)).toEqual([]);
    expect(readFileSync(join(to, 'src', 'main.ts'), 'utf8')).toBe('code');
    expect(existsSync(join(to, '.git', 'HEAD'))).toBe(true);
    expect(readlinkSync(join(to, 'abs-link'))).toBe('/usr/bin/env');
    expect(result.skipped).toEqual([{ path: 'fifo', reason: 'fifo' }]);
  });
});
