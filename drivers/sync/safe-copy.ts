// Copying a folder tree that agent code wrote (a sandbox's workspace, an archive staged from an ssh host)
// into a folder on this host, trusting nothing in it:
//  - no symlink is ever followed, on either side: every folder is opened with O_NOFOLLOW and every entry
//    is reached through its open folder (/proc/self/fd/N/name, i.e. openat), so a link swapped in while
//    we copy cannot redirect a read or a write; a link in the target is replaced, never written through;
//  - files are written to a temporary name and renamed into place (a link or hard link in the target is
//    replaced, not written through; no half-written file under the real name);
//  - only regular files, folders and symlinks are copied; FIFOs, sockets and devices are skipped and
//    reported, never opened (a FIFO cannot wedge the copy);
//  - no owners from the source (as root, new entries get the target folder's owner) and no mode bits
//    beyond rwxr-xr-x: setuid, setgid, sticky and group/other write are dropped;
//  - for a sync-back (`safeCopyBack`): nothing named `.git` (any case) anywhere, no folder that looks like
//    a git directory (HEAD with objects, refs or commondir), no symlink leading out of the tree or into a
//    `.git`: git metadata the agent wrote never reaches the host repository, whose own `.git` stays as it
//    was. Everything skipped is reported;
//  - a size limit (ENVRUN_MAX_WORKSPACE_BYTES, 2 GiB by default) is checked over the whole source before
//    anything is written, and again while copying (a source that grows meanwhile fails the copy).
// Nothing is deleted from the target: what the source lacks stays as it is.
import { randomBytes } from 'node:crypto';
import { constants as C, type Stats } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rename,
  rm,
  symlink,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { join, posix } from 'node:path';

export const DEFAULT_MAX_WORKSPACE_BYTES = 2 * 1024 ** 3;
/** How long a whole sync-back may take (the ssh driver's; a suggestion for other callers). */
export const DEFAULT_SYNC_TIMEOUT_MS = 10 * 60_000;
const MAX_REPORTED = 1000;
const MAX_DEPTH = 128;
const COPY_BUFFER = 1024 * 1024;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
const CREATE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
/** What git reads in a git directory; at the root of a tree that would look like one, these are not synced back. */
const GIT_DIR_NAMES = new Set([
  'HEAD',
  'objects',
  'refs',
  'commondir',
  'gitdir',
  'config',
  'config.worktree',
  'hooks',
  'info',
  'packed-refs',
  'worktrees',
  'modules',
  'index',
  'logs',
  'shallow',
  'FETCH_HEAD',
  'ORIG_HEAD',
  'MERGE_HEAD',
  'branches',
  'remotes',
]);

/** ENVRUN_MAX_WORKSPACE_BYTES (a positive integer), else 2 GiB. */
export function maxWorkspaceBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.ENVRUN_MAX_WORKSPACE_BYTES?.trim();
  if (!raw) return DEFAULT_MAX_WORKSPACE_BYTES;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new Error(`ENVRUN_MAX_WORKSPACE_BYTES must be a positive integer (bytes), not ${JSON.stringify(raw)}`);
  return n;
}

export type SkipReason =
  | 'git metadata is never synced back'
  | 'looks like a git directory (HEAD with objects, refs or commondir)'
  | 'symlink leading out of the workspace'
  | 'symlink leading into git metadata'
  | 'fifo'
  | 'socket'
  | 'character device'
  | 'block device'
  | 'not a file, folder or symlink'
  | 'a folder in the target is in the way'
  | 'changed while being copied'
  | 'unreadable'
  | 'nested too deep';

export interface SkippedEntry {
  /** Relative to the tree's root, `/`-separated. */
  path: string;
  reason: SkipReason;
}

export interface SafeCopyResult {
  /** Files and symlinks written. */
  copied: number;
  /** Files and symlinks already the same in the target (content and exec bit; or link text): left alone. */
  unchanged: number;
  /** Bytes of file content written. */
  bytes: number;
  /** Folders made in the target. */
  createdDirs: number;
  /** What was not copied and why (at most the first 1000; `skippedCount` has them all). */
  skipped: SkippedEntry[];
  skippedCount: number;
}

export interface SafeCopyOptions {
  /** Skip git metadata (see the top of this file). Default: true for safeCopyBack, false for safeCopyIn. */
  skipGitMetadata?: boolean;
  /** Skip symlinks whose target is absolute or climbs out of the tree. Same defaults. */
  skipEscapingSymlinks?: boolean;
  /** Leave a target file alone when its content and exec bit already match. Same defaults. */
  skipUnchanged?: boolean;
  /** Total bytes of regular files the source may hold: maxWorkspaceBytes() by default; Infinity for none. */
  maxBytes?: number;
  /** Stops the copy (between entries) with the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Fails the copy (between entries) once it has taken this long: "copy timed out after N ms". */
  timeoutMs?: number | undefined;
}

export class SyncTooLargeError extends Error {
  override name = 'SyncTooLargeError';
}

interface Ctx {
  skipGit: boolean;
  skipLinks: boolean;
  skipUnchanged: boolean;
  maxBytes: number;
  signal: AbortSignal | undefined;
  deadline: number;
  timeoutMs: number;
  apply: boolean;
  /** Bytes of the source counted (plan) or copied (apply). */
  total: number;
  owner: { uid: number; gid: number } | null;
  buffer: Buffer;
  compare: Buffer;
  result: SafeCopyResult;
}

const at = (dir: FileHandle, name: string) => `/proc/self/fd/${dir.fd}/${name}`;
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
const fileMode = (mode: number) => (mode & 0o755) | 0o600;
const dirMode = (mode: number) => (mode & 0o755) | 0o700;

function skip(ctx: Ctx, path: string, reason: SkipReason): void {
  if (!ctx.apply) return; // reported once, by the pass that writes
  ctx.result.skippedCount++;
  if (ctx.result.skipped.length < MAX_REPORTED) ctx.result.skipped.push({ path, reason });
}

function kindOf(st: Stats): SkipReason {
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'not a file, folder or symlink';
}

/** Where a link at `rel` pointing at `target` leads, lexically; null when out of the tree. */
function linkDestination(rel: string, target: string): string | null {
  if (posix.isAbsolute(target)) return null;
  const dest = posix.normalize(posix.join(posix.dirname(rel), target));
  return dest === '..' || dest.startsWith('../') ? null : dest;
}

const isGitName = (name: string) => name.toLowerCase() === '.git';

function looksLikeGitDir(names: Set<string>): boolean {
  return names.has('HEAD') && (names.has('objects') || names.has('refs') || names.has('commondir'));
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  return lstat(path).catch((err: unknown) => {
    if (errno(err) === 'ENOENT') return null;
    throw err;
  });
}

function checkAbort(ctx: Ctx): void {
  if (ctx.signal?.aborted) throw ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('copy aborted');
  if (Date.now() > ctx.deadline) throw new Error(`copy timed out after ${ctx.timeoutMs} ms`);
}

function addBytes(ctx: Ctx, n: number, rel: string): void {
  ctx.total += n;
  if (ctx.total > ctx.maxBytes) {
    throw new SyncTooLargeError(
      ctx.apply
        ? `the workspace grew past the limit of ${ctx.maxBytes} bytes while being copied (at ${rel}); set ENVRUN_MAX_WORKSPACE_BYTES to allow more`
        : `the workspace holds more than the limit of ${ctx.maxBytes} bytes (ENVRUN_MAX_WORKSPACE_BYTES); nothing was copied`,
    );
  }
}

const tempName = () => `.envrun-sync-${randomBytes(6).toString('hex')}.tmp`;

async function setOwner(ctx: Ctx, fh: FileHandle): Promise<void> {
  if (ctx.owner) await fh.chown(ctx.owner.uid, ctx.owner.gid);
}

/** Does the target file (a regular file of the same size) hold what the open source file holds? */
async function sameContent(ctx: Ctx, input: FileHandle, targetPath: string, size: number): Promise<boolean> {
  const target = await open(targetPath, READ_FLAGS).catch(() => null);
  if (!target) return false;
  try {
    if (!(await target.stat()).isFile()) return false;
    for (let position = 0; position < size;) {
      const n = Math.min(ctx.buffer.length, size - position);
      const [a, b] = await Promise.all([
        input.read(ctx.buffer, 0, n, position),
        target.read(ctx.compare, 0, n, position),
      ]);
      if (a.bytesRead !== n || b.bytesRead !== n || ctx.buffer.compare(ctx.compare, 0, n, 0, n) !== 0) return false;
      position += n;
    }
    return true;
  } finally {
    await target.close();
  }
}

/** Copies one regular file (opened without following links) to a temporary name, then renames it into place. */
async function copyFile(
  ctx: Ctx,
  src: FileHandle,
  dst: FileHandle,
  name: string,
  rel: string,
  planned: Stats,
  existing: Stats | null,
): Promise<void> {
  const input = await open(at(src, name), READ_FLAGS).catch((err: unknown) => {
    if (errno(err) === 'EACCES') return 'unreadable' as const;
    if (errno(err) === 'ELOOP' || errno(err) === 'ENOENT' || errno(err) === 'ENXIO') return null;
    throw err;
  });
  if (input === 'unreadable') return skip(ctx, rel, 'unreadable');
  if (!input) return skip(ctx, rel, 'changed while being copied');
  try {
    const st = await input.stat();
    if (!st.isFile() || st.ino !== planned.ino || st.dev !== planned.dev)
      return skip(ctx, rel, st.isFile() ? 'changed while being copied' : kindOf(st));
    if (
      ctx.skipUnchanged &&
      existing?.isFile() &&
      existing.size === st.size &&
      (existing.mode & 0o100) === (st.mode & 0o100) &&
      (await sameContent(ctx, input, at(dst, name), st.size))
    ) {
      addBytes(ctx, st.size, rel);
      ctx.result.unchanged++;
      return;
    }
    const temp = tempName();
    const output = await open(at(dst, temp), CREATE_FLAGS, 0o600);
    let renamed = false;
    try {
      let position = 0;
      for (;;) {
        const { bytesRead } = await input.read(ctx.buffer, 0, ctx.buffer.length, position);
        position += bytesRead;
        if (bytesRead === 0) break;
        addBytes(ctx, bytesRead, rel);
        let written = 0;
        while (written < bytesRead)
          written += (await output.write(ctx.buffer, written, bytesRead - written)).bytesWritten;
        ctx.result.bytes += bytesRead;
      }
      await setOwner(ctx, output);
      await output.chmod(fileMode(st.mode));
      await output.utimes(st.atimeMs / 1000, st.mtimeMs / 1000);
      await output.close();
      await rename(at(dst, temp), at(dst, name));
      renamed = true;
      ctx.result.copied++;
    } finally {
      if (!renamed) {
        await output.close().catch(() => undefined);
        await unlink(at(dst, temp)).catch(() => undefined);
      }
    }
  } finally {
    await input.close();
  }
}

async function copyLink(
  ctx: Ctx,
  src: FileHandle,
  dst: FileHandle,
  name: string,
  rel: string,
  existing: Stats | null,
): Promise<void> {
  const target = await readlink(at(src, name));
  if (existing?.isSymbolicLink() && (await readlink(at(dst, name)).catch(() => null)) === target) {
    ctx.result.unchanged++;
    return;
  }
  const temp = tempName();
  await symlink(target, at(dst, temp));
  try {
    await rename(at(dst, temp), at(dst, name));
  } catch (err) {
    await unlink(at(dst, temp)).catch(() => undefined);
    throw err;
  }
  ctx.result.copied++;
}

/** Opens (making it, replacing a file or link in the way) the target folder `name` in `dst`; null in the plan pass when absent. */
async function targetDir(ctx: Ctx, dst: FileHandle | null, name: string, mode: number): Promise<FileHandle | null> {
  if (!dst) return null;
  const existing = await lstatOrNull(at(dst, name));
  if (existing?.isDirectory()) return open(at(dst, name), DIR_FLAGS);
  if (!ctx.apply) return null;
  if (existing) await unlink(at(dst, name)); // a file or a link where the source has a folder: the link goes, never followed
  await mkdir(at(dst, name), { mode: 0o700 });
  const fh = await open(at(dst, name), DIR_FLAGS);
  await setOwner(ctx, fh);
  await fh.chmod(dirMode(mode));
  ctx.result.createdDirs++;
  return fh;
}

/** The names in an open folder, sorted. */
async function namesIn(dir: FileHandle): Promise<string[]> {
  return (await readdir(`/proc/self/fd/${dir.fd}`)).sort();
}

/** Would git take this folder (its source entries plus what the target already has there) for a git directory? */
async function gitLike(names: string[], dst: FileHandle | null, name: string | null): Promise<boolean> {
  const all = new Set(names);
  const existing = dst ? (name === null ? dst : await open(at(dst, name), DIR_FLAGS).catch(() => null)) : null;
  if (existing) {
    try {
      for (const n of await namesIn(existing)) all.add(n);
    } finally {
      if (existing !== dst) await existing.close();
    }
  }
  return looksLikeGitDir(all);
}

/** Copies the entries `names` of the open source folder `src` (at `rel`) into the open target folder `dst`. */
async function copyEntries(
  ctx: Ctx,
  src: FileHandle,
  names: string[],
  dst: FileHandle | null,
  rel: string,
  depth: number,
  excluded: ReadonlySet<string>,
): Promise<void> {
  for (const name of names) {
    checkAbort(ctx);
    const path = rel ? `${rel}/${name}` : name;
    if (ctx.skipGit && isGitName(name)) {
      skip(ctx, path, 'git metadata is never synced back');
      continue;
    }
    if (excluded.has(name)) {
      skip(ctx, path, 'looks like a git directory (HEAD with objects, refs or commondir)');
      continue;
    }
    const st = await lstatOrNull(at(src, name));
    if (!st) continue; // gone since readdir
    const existing = dst ? await lstatOrNull(at(dst, name)) : null;
    if (st.isDirectory()) {
      if (depth >= MAX_DEPTH) {
        skip(ctx, path, 'nested too deep');
        continue;
      }
      const child = await open(at(src, name), DIR_FLAGS).catch((err: unknown) => {
        if (errno(err) === 'EACCES') return 'unreadable' as const;
        if (errno(err) === 'ELOOP' || errno(err) === 'ENOTDIR' || errno(err) === 'ENOENT') return null;
        throw err;
      });
      if (child === 'unreadable') {
        skip(ctx, path, 'unreadable');
        continue;
      }
      if (!child) {
        skip(ctx, path, 'changed while being copied');
        continue;
      }
      try {
        const childNames = await namesIn(child);
        // Git takes a folder holding HEAD plus objects/refs/commondir for a (bare) repository, its config and
        // hooks included: such a folder is not synced back at all.
        if (ctx.skipGit && (await gitLike(childNames, existing?.isDirectory() ? dst : null, name))) {
          skip(ctx, path, 'looks like a git directory (HEAD with objects, refs or commondir)');
          continue;
        }
        const target = await targetDir(ctx, dst, name, st.mode);
        try {
          await copyEntries(ctx, child, childNames, target, path, depth + 1, NONE);
        } finally {
          await target?.close();
        }
      } finally {
        await child.close();
      }
    } else if (st.isSymbolicLink()) {
      if (ctx.skipLinks || ctx.skipGit) {
        const dest = linkDestination(path, await readlink(at(src, name)));
        if (ctx.skipLinks && dest === null) {
          skip(ctx, path, 'symlink leading out of the workspace');
          continue;
        }
        if (ctx.skipGit && dest !== null && dest.split('/').some(isGitName)) {
          skip(ctx, path, 'symlink leading into git metadata');
          continue;
        }
      }
      if (existing?.isDirectory()) skip(ctx, path, 'a folder in the target is in the way');
      else if (ctx.apply) await copyLink(ctx, src, dst!, name, path, existing);
    } else if (st.isFile()) {
      if (existing?.isDirectory()) skip(ctx, path, 'a folder in the target is in the way');
      else if (ctx.apply) await copyFile(ctx, src, dst!, name, path, st, existing);
      else addBytes(ctx, st.size, path);
    } else {
      skip(ctx, path, kindOf(st));
    }
  }
}

const NONE: ReadonlySet<string> = new Set();

async function openRoot(path: string, what: string): Promise<FileHandle> {
  const real = await realpath(path).catch((err: Error) => {
    throw new Error(`${what} ${path} is not there: ${err.message}`);
  });
  return open(real, DIR_FLAGS).catch((err: Error) => {
    throw new Error(`${what} ${path} is not a folder: ${err.message}`);
  });
}

/**
 * Copies the tree `fromDir` into the existing folder `toDir` as described at the top of this file: first a
 * pass that only reads (sizes against the limit: over it, nothing is written), then the copy.
 */
export async function safeCopyTree(
  fromDir: string,
  toDir: string,
  options: SafeCopyOptions &
    Required<Pick<SafeCopyOptions, 'skipGitMetadata' | 'skipEscapingSymlinks' | 'skipUnchanged'>>,
): Promise<SafeCopyResult> {
  const result: SafeCopyResult = { copied: 0, unchanged: 0, bytes: 0, createdDirs: 0, skipped: [], skippedCount: 0 };
  const src = await openRoot(fromDir, 'source');
  try {
    const dst = await openRoot(toDir, 'target');
    try {
      const rootStat = await dst.stat();
      const ctx: Ctx = {
        skipGit: options.skipGitMetadata,
        skipLinks: options.skipEscapingSymlinks,
        skipUnchanged: options.skipUnchanged,
        maxBytes: options.maxBytes ?? maxWorkspaceBytes(),
        signal: options.signal,
        apply: false,
        total: 0,
        deadline: options.timeoutMs ? Date.now() + options.timeoutMs : Infinity,
        timeoutMs: options.timeoutMs ?? 0,
        owner: process.getuid?.() === 0 ? { uid: rootStat.uid, gid: rootStat.gid } : null,
        buffer: Buffer.allocUnsafe(COPY_BUFFER),
        compare: Buffer.allocUnsafe(COPY_BUFFER),
        result,
      };
      // At the root, the workspace itself must not come to look like a git directory either.
      const names = await namesIn(src);
      const excluded = ctx.skipGit && (await gitLike(names, dst, null)) ? GIT_DIR_NAMES : NONE;
      await copyEntries(ctx, src, names, dst, '', 0, excluded); // the plan: reads only, throws when over the limit
      ctx.apply = true;
      ctx.total = 0;
      await copyEntries(ctx, src, names, dst, '', 0, excluded);
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  return result;
}

/**
 * Sync-back: the workspace an agent used (`fromDir`: a sandbox folder, or a staging folder an archive was
 * extracted into) into the user's workspace (`toDir`). Git metadata and escaping links are skipped;
 * unchanged files are left alone.
 */
export function safeCopyBack(fromDir: string, toDir: string, options: SafeCopyOptions = {}): Promise<SafeCopyResult> {
  return safeCopyTree(fromDir, toDir, {
    skipGitMetadata: true,
    skipEscapingSymlinks: true,
    skipUnchanged: true,
    ...options,
  });
}

/**
 * Upload: the user's workspace (`fromDir`, `.git` included) into a sandbox folder (`toDir`) that may hold
 * what an earlier run left (links included: never followed). Every file is rewritten; no size limit unless given.
 */
export function safeCopyIn(fromDir: string, toDir: string, options: SafeCopyOptions = {}): Promise<SafeCopyResult> {
  return safeCopyTree(fromDir, toDir, {
    skipGitMetadata: false,
    skipEscapingSymlinks: false,
    skipUnchanged: false,
    maxBytes: Infinity,
    ...options,
  });
}

/** One line for logs and progress: what was copied and what was skipped (the first few, with reasons). */
export function describeCopy(result: SafeCopyResult, max = 5): string {
  const head = `${result.copied} written, ${result.unchanged} unchanged, ${result.bytes} bytes`;
  if (result.skippedCount === 0) return head;
  if (max <= 0) return `${head}; skipped ${result.skippedCount}`;
  const shown = result.skipped
    .slice(0, max)
    .map((s) => `${s.path} (${s.reason})`)
    .join(', ');
  return `${head}; skipped ${result.skippedCount}: ${shown}${result.skippedCount > max ? ', …' : ''}`;
}

/**
 * `rm -rf` of a tree this process made (a staging folder), even when an archive gave its folders no write
 * or search permission (a worker that is not root could not remove those otherwise). Links are not followed.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch {
    // make every folder usable, then try again
  }
  const open = async (dir: string): Promise<void> => {
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory()) return;
    await chmod(dir, 0o700).catch(() => undefined);
    for (const name of await readdir(dir).catch(() => [])) await open(join(dir, name));
  };
  await open(path);
  await rm(path, { recursive: true, force: true });
}
