// Copying a folder tree that agent code wrote (a sandbox's workspace, an archive staged from an ssh host)
// into a folder on this host, trusting nothing in it:
//  - no symlink is ever followed, on either side: every folder is opened with O_NOFOLLOW and every entry
//    is reached through its open folder (/proc/self/fd/N/name, i.e. openat), so a link swapped in while
//    we copy cannot redirect a read or a write; a link in the target is replaced, never written through;
//  - files are written to a temporary name and renamed into place (a link or hard link in the target is
//    replaced, not written through; no half-written file under the real name); runs of zero bytes are
//    left as holes, so a sparse file stays sparse;
//  - only regular files, folders and symlinks are copied; FIFOs, sockets and devices are skipped and
//    reported, never opened (a FIFO cannot wedge the copy);
//  - no owners from the source (as root, new entries get the target folder's owner) and no mode bits
//    beyond rwxr-xr-x: setuid, setgid, sticky and group/other write are dropped;
//  - for a sync-back (`safeCopyBack`): nothing named `.git` (any case) anywhere, no folder that looks like
//    a git directory (HEAD with objects, refs or commondir), no symlink leading out of the tree or into a
//    `.git`: git metadata the agent wrote never reaches the host repository, whose own `.git` stays as it
//    was. A link is judged by where the kernel would take it in the target once the copy is done (through
//    the target's links and the ones this copy writes, at most 40 of them, as the kernel), not by its text
//    alone; and its text may not climb back out of a folder it names (`x/..`), so that no later change to
//    `x` can turn it. Every changed file on the list in exec-config.ts (files tools on the host run) is
//    reported as `flagged`; files matching ENVRUN_SYNC_BACK_DENY are held back. Everything skipped is
//    reported;
//  - limits, checked over the whole source before anything is written, and again while copying (a source
//    that grows meanwhile fails the copy): ENVRUN_MAX_WORKSPACE_BYTES (2 GiB by default; a sparse file
//    counts its apparent size), ENVRUN_MAX_WORKSPACE_FILES (entries of any kind, 1,000,000 by default) and
//    ENVRUN_MAX_WORKSPACE_DEPTH (nested folders, 128 by default).
// Nothing is deleted from the target: what the source lacks stays as it is. With `only`, just the entries
// named (and the folders on the way to them) are copied, by the same rules.
import { createHash, randomBytes } from 'node:crypto';
import { constants as C, type Stats } from 'node:fs';
import {
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rename,
  symlink,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { join, posix } from 'node:path';
import { EnvRunError } from '../../contracts/errors.js';
import { readSetting } from '../../config/settings.js';
import { globMatcher, isExecutableConfig } from './exec-config.js';

/** Deeper than this a copy would hold too many folders open at once. */
const DEPTH_CEILING = 1000;
/** How long a whole sync-back may take (the ssh driver's; a suggestion for other callers). */
/** A copy that has done nothing yet. */
export function emptyCopyResult(): SafeCopyResult {
  return {
    copied: 0,
    unchanged: 0,
    bytes: 0,
    createdDirs: 0,
    skipped: [],
    skippedCount: 0,
    flagged: [],
    flaggedCount: 0,
  };
}

export const DEFAULT_SYNC_TIMEOUT_MS = 10 * 60_000;
const MAX_REPORTED = 1000;
/** Links followed while resolving one link, as the kernel (ELOOP past 40). */
const MAX_LINK_HOPS = 40;
/** Path components looked at while resolving one link (every branch together). */
const MAX_RESOLVE_STEPS = 100_000;
const COPY_BUFFER = 1024 * 1024;
/** Runs of zeros this long (aligned) are left as holes. */
const HOLE_BLOCK = 4096;
const ZEROS = Buffer.alloc(COPY_BUFFER);
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

/** ENVRUN_MAX_WORKSPACE_BYTES (a positive integer), else 2 GiB; a bad value throws a ConfigError naming it. */
export function maxWorkspaceBytes(env: NodeJS.ProcessEnv = process.env): number {
  return readSetting('ENVRUN_MAX_WORKSPACE_BYTES', env);
}

/** ENVRUN_MAX_WORKSPACE_FILES: files, folders and links a sync-back may hold together. */
export function maxWorkspaceFiles(env: NodeJS.ProcessEnv = process.env): number {
  return readSetting('ENVRUN_MAX_WORKSPACE_FILES', env);
}

/** ENVRUN_MAX_WORKSPACE_DEPTH: folders a sync-back may nest (the schema allows at most 1000). */
export function maxWorkspaceDepth(env: NodeJS.ProcessEnv = process.env): number {
  return readSetting('ENVRUN_MAX_WORKSPACE_DEPTH', env);
}

/**
 * ENVRUN_SYNC_BACK_DENY: comma-separated globs over paths inside the workspace (`.mcp.json,.claude/**`);
 * a pattern without a slash matches a name at any depth; case-insensitive. Unset: none.
 */
export function syncBackDeny(env: NodeJS.ProcessEnv = process.env): string[] {
  return readSetting('ENVRUN_SYNC_BACK_DENY', env);
}

export type SkipReason =
  | 'git metadata is never synced back'
  | 'looks like a git directory (HEAD with objects, refs or commondir)'
  | 'symlink leading out of the workspace'
  | 'symlink leading into git metadata'
  | 'symlink loop or chain of more than 40 links'
  | 'symlink climbing out of a folder it names (x/..)'
  | 'held back by ENVRUN_SYNC_BACK_DENY'
  | 'fifo'
  | 'socket'
  | 'character device'
  | 'block device'
  | 'not a file, folder or symlink'
  | 'a folder in the target is in the way'
  | 'changed while being copied'
  | 'unreadable';

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
  /** Bytes of file content written (holes included). */
  bytes: number;
  /** Folders made in the target. */
  createdDirs: number;
  /** What was not copied and why (at most the first 1000; `skippedCount` has them all). */
  skipped: SkippedEntry[];
  skippedCount: number;
  /** Files and links written that tools on the host run (exec-config.ts), sorted by path; at most 1000. */
  flagged: string[];
  flaggedCount: number;
}

export interface SafeCopyOptions {
  /** Skip git metadata (see the top of this file). Default: true for safeCopyBack, false for safeCopyIn. */
  skipGitMetadata?: boolean;
  /** Skip symlinks that lead out of the tree, by their text or through other links. Same defaults. */
  skipEscapingSymlinks?: boolean;
  /** Leave a target file alone when its content and exec bit already match. Same defaults. */
  skipUnchanged?: boolean;
  /** Report written files that tools on the host run (`flagged`). Same defaults. */
  flagExecutableConfig?: boolean;
  /** Globs of files and links to hold back (reported): syncBackDeny() for safeCopyBack, none for safeCopyIn. */
  deny?: readonly string[];
  /** Total bytes of regular files the source may hold: maxWorkspaceBytes() by default; Infinity for none. */
  maxBytes?: number;
  /** Entries (files, folders, links, anything) the source may hold: maxWorkspaceFiles() by default. */
  maxFiles?: number;
  /** Folders the source may nest: maxWorkspaceDepth() by default (at most 1000). */
  maxDepth?: number;
  /** Stops the copy (between entries) with the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Fails the copy (between entries) once it has taken this long: "copy timed out after N ms". */
  timeoutMs?: number | undefined;
  /**
   * Copy only these entries (paths relative to the source, `/`-separated) and the folders on the way to
   * them; nothing else of either tree is looked at (limits count what is looked at).
   */
  only?: ReadonlySet<string> | undefined;
  /**
   * Told of each file and link written (a link already the same included) and each folder made or entered,
   * as the copy goes; a file with the sha256 of the bytes written and the source's stat when it was opened.
   */
  onWritten?: ((entry: WrittenEntry) => void) | undefined;
}

/** What `onWritten` hears of. */
export type WrittenEntry =
  | { kind: 'file'; path: string; size: number; mtimeMs: number; mode: number; sha256: string }
  | { kind: 'link'; path: string; text: string }
  | { kind: 'dir'; path: string };

export class SyncTooLargeError extends EnvRunError {
  override name = 'SyncTooLargeError';
  readonly code = 'sync_too_large';
}

/** What the read-only pass learnt about the links to write, for judging them before anything is written. */
interface LinkPlan {
  /** Links to write (new or changed): path → text. */
  pending: Map<string, string>;
  /** Folders of the source, by path (they exist in the target once copied). */
  dirs: Set<string>;
  /** Links judged unfit, with the reason. */
  rejected: Map<string, SkipReason>;
}

interface Ctx {
  skipGit: boolean;
  skipLinks: boolean;
  skipUnchanged: boolean;
  flag: boolean;
  denied: ((path: string) => boolean) | null;
  maxBytes: number;
  maxFiles: number;
  maxDepth: number;
  signal: AbortSignal | undefined;
  /** `only` with the folders on the way to its entries, or null for everything. */
  wanted: Set<string> | null;
  onWritten: ((entry: WrittenEntry) => void) | null;
  deadline: number;
  timeoutMs: number;
  apply: boolean;
  /** Bytes of the source counted (plan) or copied (apply). */
  total: number;
  /** Entries of the source counted (plan) or seen (apply). */
  entries: number;
  owner: { uid: number; gid: number } | null;
  links: LinkPlan;
  buffer: Buffer;
  compare: Buffer;
  result: SafeCopyResult;
}

const at = (dir: FileHandle, name: string) => `/proc/self/fd/${dir.fd}/${name}`;
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
/** The mode bits a copy gives a file: the source's, no setuid/setgid/sticky or group/other write, owner rw. */
export const fileMode = (mode: number) => (mode & 0o755) | 0o600;
const dirMode = (mode: number) => (mode & 0o755) | 0o700;
const shortPath = (path: string) => (path.length > 200 ? `${path.slice(0, 200)}…` : path);

function skip(ctx: Ctx, path: string, reason: SkipReason): void {
  if (!ctx.apply) return; // reported once, by the pass that writes
  ctx.result.skippedCount++;
  if (ctx.result.skipped.length < MAX_REPORTED) ctx.result.skipped.push({ path, reason });
}

function flag(ctx: Ctx, path: string): void {
  if (!ctx.flag || !isExecutableConfig(path)) return;
  ctx.result.flaggedCount++;
  if (ctx.result.flagged.length < MAX_REPORTED) ctx.result.flagged.push(path);
}

function kindOf(st: Stats): SkipReason {
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'not a file, folder or symlink';
}

/** Where a link at `rel` pointing at `target` leads, by its text; null when out of the tree. */
function linkDestination(rel: string, target: string): string | null {
  if (posix.isAbsolute(target)) return null;
  const dest = posix.normalize(posix.join(posix.dirname(rel), target));
  return dest === '..' || dest.startsWith('../') ? null : dest;
}

/** Does the link text climb out of a folder it named (`x/..`)? Where it leads would then depend on what `x` is. */
function climbsAfterName(target: string): boolean {
  let named = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part !== '..') named = true;
    else if (named) return true;
  }
  return false;
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

function tooLarge(ctx: Ctx, what: string, limit: number, variable: string, rel: string): SyncTooLargeError {
  return new SyncTooLargeError(
    ctx.apply
      ? `the workspace grew past the limit of ${limit} ${what} while being copied (at ${shortPath(rel)}); set ${variable} to allow more`
      : `the workspace holds more than the limit of ${limit} ${what} (${variable}); nothing was copied`,
  );
}

function addBytes(ctx: Ctx, n: number, rel: string): void {
  ctx.total += n;
  if (ctx.total > ctx.maxBytes) throw tooLarge(ctx, 'bytes', ctx.maxBytes, 'ENVRUN_MAX_WORKSPACE_BYTES', rel);
}

function addEntry(ctx: Ctx, rel: string): void {
  if (++ctx.entries > ctx.maxFiles)
    throw tooLarge(ctx, 'files, folders and links', ctx.maxFiles, 'ENVRUN_MAX_WORKSPACE_FILES', rel);
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

const isZero = (buffer: Buffer, start: number, end: number) => ZEROS.compare(buffer, start, end, 0, end - start) === 0;

/** Writes `buffer[0, n)` at `position`, leaving aligned blocks of zeros as holes. */
async function writeSparse(output: FileHandle, buffer: Buffer, n: number, position: number): Promise<void> {
  if (isZero(buffer, 0, n)) return;
  let run = -1; // start of the current run of data blocks
  for (let block = 0; block <= n; block += HOLE_BLOCK) {
    const end = Math.min(block + HOLE_BLOCK, n);
    const data = block < n && !isZero(buffer, block, end);
    if (data && run < 0) run = block;
    if (!data && run >= 0) {
      await writeAll(output, buffer, run, block - run, position + run);
      run = -1;
    }
  }
  if (run >= 0) await writeAll(output, buffer, run, n - run, position + run);
}

async function writeAll(output: FileHandle, buffer: Buffer, offset: number, length: number, position: number) {
  for (let written = 0; written < length;)
    written += (await output.write(buffer, offset + written, length - written, position + written)).bytesWritten;
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
    if (ctx.denied?.(rel)) return skip(ctx, rel, 'held back by ENVRUN_SYNC_BACK_DENY');
    const temp = tempName();
    const output = await open(at(dst, temp), CREATE_FLAGS, 0o600);
    const hash = ctx.onWritten ? createHash('sha256') : null;
    let renamed = false;
    try {
      let position = 0;
      for (;;) {
        const { bytesRead } = await input.read(ctx.buffer, 0, ctx.buffer.length, position);
        if (bytesRead === 0) break;
        addBytes(ctx, bytesRead, rel);
        hash?.update(ctx.buffer.subarray(0, bytesRead));
        await writeSparse(output, ctx.buffer, bytesRead, position);
        position += bytesRead;
        ctx.result.bytes += bytesRead;
      }
      await output.truncate(position); // the length, holes at the end included
      await setOwner(ctx, output);
      await output.chmod(fileMode(st.mode));
      await output.utimes(st.atimeMs / 1000, st.mtimeMs / 1000);
      await output.close();
      await rename(at(dst, temp), at(dst, name));
      renamed = true;
      ctx.result.copied++;
      flag(ctx, rel);
      if (hash)
        ctx.onWritten?.({
          kind: 'file',
          path: rel,
          size: position,
          mtimeMs: st.mtimeMs,
          mode: st.mode,
          sha256: hash.digest('hex'),
        });
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

async function writeLink(ctx: Ctx, dst: FileHandle, name: string, rel: string, target: string): Promise<void> {
  const temp = tempName();
  await symlink(target, at(dst, temp));
  try {
    await rename(at(dst, temp), at(dst, name));
  } catch (err) {
    await unlink(at(dst, temp)).catch(() => undefined);
    throw err;
  }
  ctx.result.copied++;
  flag(ctx, rel);
}

/**
 * What becomes of a source link at `rel` (text `target`) by what both trees hold: `write`, `unchanged`, or
 * why it is skipped. The same in both passes; where the kernel would take it is judged after the plan.
 */
async function linkDecision(
  ctx: Ctx,
  rel: string,
  target: string,
  dst: FileHandle | null,
  name: string,
  existing: Stats | null,
): Promise<'write' | 'unchanged' | SkipReason> {
  if (ctx.skipLinks || ctx.skipGit) {
    const dest = linkDestination(rel, target);
    if (ctx.skipLinks && dest === null) return 'symlink leading out of the workspace';
    if (ctx.skipGit && dest !== null && dest.split('/').some(isGitName)) return 'symlink leading into git metadata';
  }
  if (existing?.isDirectory()) return 'a folder in the target is in the way';
  if (existing?.isSymbolicLink() && dst && (await readlink(at(dst, name)).catch(() => null)) === target)
    return 'unchanged';
  if (ctx.denied?.(rel)) return 'held back by ENVRUN_SYNC_BACK_DENY';
  return 'write';
}

async function copyLink(
  ctx: Ctx,
  src: FileHandle,
  dst: FileHandle | null,
  name: string,
  rel: string,
  existing: Stats | null,
): Promise<void> {
  const target = await readlink(at(src, name)).catch((err: unknown) => {
    if (errno(err) === 'EINVAL' || errno(err) === 'ENOENT') return null;
    throw err;
  });
  if (target === null) return skip(ctx, rel, 'changed while being copied');
  const decision = await linkDecision(ctx, rel, target, dst, name, existing);
  if (!ctx.apply) {
    if (decision === 'write' && ctx.skipLinks) ctx.links.pending.set(rel, target);
    return;
  }
  if (decision === 'unchanged') {
    ctx.result.unchanged++;
    ctx.onWritten?.({ kind: 'link', path: rel, text: target });
    return;
  }
  if (decision !== 'write') return skip(ctx, rel, decision);
  const rejected = ctx.links.rejected.get(rel);
  if (rejected) return skip(ctx, rel, rejected);
  // Judged in the plan by its text then: a link that changed since is not written unjudged.
  if (ctx.skipLinks && ctx.links.pending.get(rel) !== target) return skip(ctx, rel, 'changed while being copied');
  await writeLink(ctx, dst!, name, rel, target);
  ctx.onWritten?.({ kind: 'link', path: rel, text: target });
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
    if (ctx.wanted && !ctx.wanted.has(path)) continue;
    addEntry(ctx, path);
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
      if (depth >= ctx.maxDepth)
        throw tooLarge(ctx, 'nested folders', ctx.maxDepth, 'ENVRUN_MAX_WORKSPACE_DEPTH', path);
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
        if (!ctx.apply && ctx.skipLinks) ctx.links.dirs.add(path);
        const target = await targetDir(ctx, dst, name, st.mode);
        if (ctx.apply && target) ctx.onWritten?.({ kind: 'dir', path });
        try {
          await copyEntries(ctx, child, childNames, target, path, depth + 1, NONE);
        } finally {
          await target?.close();
        }
      } finally {
        await child.close();
      }
    } else if (st.isSymbolicLink()) {
      await copyLink(ctx, src, dst, name, path, existing);
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

type Entry = { kind: 'dir' } | { kind: 'link'; text: string } | { kind: 'end' };
type Outcome = 'inside' | 'loop' | 'git' | 'outside';
const SEVERITY: Record<Outcome, number> = { inside: 0, loop: 1, git: 2, outside: 3 };
const DIR: Entry = { kind: 'dir' };
const END: Entry = { kind: 'end' };

/**
 * The target as it will be once the copy is done, for resolving links in it: the target's own entries
 * (read by path below its real root, only through folders, never through a link), with the source's
 * folders and the links to write laid over them. Where this copy replaces a link of the target, both are
 * possible (before and after that write): resolution follows both.
 */
class FinalTree {
  private cache = new Map<string, Entry>();
  constructor(
    private root: string,
    private plan: LinkPlan,
  ) {}

  private async target(rel: string): Promise<Entry> {
    if (rel === '') return DIR;
    const known = this.cache.get(rel);
    if (known) return known;
    const parent = posix.dirname(rel);
    let entry: Entry = END;
    if ((await this.target(parent === '.' ? '' : parent)).kind === 'dir') {
      const st = await lstat(join(this.root, rel)).catch(() => null);
      if (st?.isDirectory()) entry = DIR;
      else if (st?.isSymbolicLink()) {
        const text = await readlink(join(this.root, rel)).catch(() => null);
        entry = text === null ? END : { kind: 'link', text };
      }
    }
    if (this.cache.size >= 100_000) this.cache.clear();
    this.cache.set(rel, entry);
    return entry;
  }

  async entries(rel: string): Promise<Entry[]> {
    const own = await this.target(rel);
    const pending = this.plan.pending.get(rel);
    if (pending !== undefined) {
      const link: Entry = { kind: 'link', text: pending };
      return own.kind === 'link' ? [link, own] : [link];
    }
    if (this.plan.dirs.has(rel)) return own.kind === 'link' ? [DIR, own] : [DIR];
    return [own];
  }
}

/** Where the kernel takes the link at `rel` (text `text`) in `tree`: inside the root, out of it, into a .git, or nowhere (a loop). */
async function resolveLink(tree: FinalTree, rel: string, text: string): Promise<Outcome> {
  let steps = 0;
  const walk = async (stack: string[], parts: string[], hops: number): Promise<Outcome> => {
    for (let i = 0; i < parts.length; i++) {
      if (++steps > MAX_RESOLVE_STEPS) return 'loop';
      const part = parts[i]!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (stack.length === 0) return 'outside';
        stack.pop();
        continue;
      }
      const path = [...stack, part];
      const options = await tree.entries(path.join('/'));
      if (options.length === 1 && options[0]!.kind === 'dir') {
        stack.push(part);
        continue;
      }
      let worst: Outcome = 'inside';
      for (const option of options) {
        let outcome: Outcome;
        if (option.kind === 'dir') outcome = await walk(path, parts.slice(i + 1), hops);
        else if (option.kind === 'end')
          outcome = path.some(isGitName) ? 'git' : 'inside'; // a file, or nothing
        else if (hops >= MAX_LINK_HOPS) outcome = 'loop';
        else if (posix.isAbsolute(option.text)) outcome = 'outside';
        else outcome = await walk([...stack], [...option.text.split('/'), ...parts.slice(i + 1)], hops + 1);
        if (SEVERITY[outcome] > SEVERITY[worst]) worst = outcome;
      }
      return worst;
    }
    return stack.some(isGitName) ? 'git' : 'inside';
  };
  if (posix.isAbsolute(text)) return 'outside';
  const dir = posix.dirname(rel);
  return walk(dir === '.' ? [] : dir.split('/'), text.split('/'), 0);
}

const OUTCOME_REASON: Record<Exclude<Outcome, 'inside'>, SkipReason> = {
  outside: 'symlink leading out of the workspace',
  git: 'symlink leading into git metadata',
  loop: 'symlink loop or chain of more than 40 links',
};

/** Judges every link the plan would write by where the kernel takes it in the target once copied. */
async function judgeLinks(ctx: Ctx, targetRoot: string): Promise<void> {
  const tree = new FinalTree(targetRoot, ctx.links);
  // Rejecting a link leaves the target's entry in its place, which was already followed as the other
  // possibility there: one pass decides them all.
  for (const [rel, text] of ctx.links.pending) {
    checkAbort(ctx);
    const outcome = await resolveLink(tree, rel, text);
    if (outcome !== 'inside') ctx.links.rejected.set(rel, OUTCOME_REASON[outcome]);
    else if (climbsAfterName(text)) ctx.links.rejected.set(rel, 'symlink climbing out of a folder it names (x/..)');
  }
}

/** The paths with every folder on the way to them. */
function withFolders(paths: ReadonlySet<string>): Set<string> {
  const all = new Set<string>();
  for (const path of paths) {
    for (let p = path; p !== '.' && !all.has(p); p = posix.dirname(p)) all.add(p);
  }
  return all;
}

async function openRoot(path: string, what: string): Promise<{ fh: FileHandle; real: string }> {
  const real = await realpath(path).catch((err: Error) => {
    throw new Error(`${what} ${path} is not there: ${err.message}`);
  });
  const fh = await open(real, DIR_FLAGS).catch((err: Error) => {
    throw new Error(`${what} ${path} is not a folder: ${err.message}`);
  });
  return { fh, real };
}

/**
 * Copies the tree `fromDir` into the existing folder `toDir` as described at the top of this file: first a
 * pass that only reads (limits; links judged: over a limit, nothing is written), then the copy.
 */
export async function safeCopyTree(
  fromDir: string,
  toDir: string,
  options: SafeCopyOptions &
    Required<Pick<SafeCopyOptions, 'skipGitMetadata' | 'skipEscapingSymlinks' | 'skipUnchanged'>>,
): Promise<SafeCopyResult> {
  const result = emptyCopyResult();
  const maxDepth = options.maxDepth ?? maxWorkspaceDepth();
  if (!Number.isSafeInteger(maxDepth) || maxDepth <= 0 || maxDepth > DEPTH_CEILING)
    throw new Error(`maxDepth must be a positive integer of at most ${DEPTH_CEILING}, not ${maxDepth}`);
  const deny = options.deny ?? [];
  const { fh: src } = await openRoot(fromDir, 'source');
  try {
    const { fh: dst, real: targetRoot } = await openRoot(toDir, 'target');
    try {
      const rootStat = await dst.stat();
      const ctx: Ctx = {
        skipGit: options.skipGitMetadata,
        skipLinks: options.skipEscapingSymlinks,
        skipUnchanged: options.skipUnchanged,
        flag: options.flagExecutableConfig ?? false,
        denied: deny.length > 0 ? globMatcher(deny) : null,
        maxBytes: options.maxBytes ?? maxWorkspaceBytes(),
        maxFiles: options.maxFiles ?? maxWorkspaceFiles(),
        maxDepth,
        signal: options.signal,
        wanted: options.only ? withFolders(options.only) : null,
        onWritten: options.onWritten ?? null,
        apply: false,
        total: 0,
        entries: 0,
        deadline: options.timeoutMs ? Date.now() + options.timeoutMs : Infinity,
        timeoutMs: options.timeoutMs ?? 0,
        owner: process.getuid?.() === 0 ? { uid: rootStat.uid, gid: rootStat.gid } : null,
        links: { pending: new Map(), dirs: new Set(), rejected: new Map() },
        buffer: Buffer.allocUnsafe(COPY_BUFFER),
        compare: Buffer.allocUnsafe(COPY_BUFFER),
        result,
      };
      // At the root, the workspace itself must not come to look like a git directory either.
      const names = await namesIn(src);
      const excluded = ctx.skipGit && (await gitLike(names, dst, null)) ? GIT_DIR_NAMES : NONE;
      await copyEntries(ctx, src, names, dst, '', 0, excluded); // the plan: reads only, throws over a limit
      if (ctx.skipLinks) await judgeLinks(ctx, targetRoot);
      ctx.apply = true;
      ctx.total = 0;
      ctx.entries = 0;
      await copyEntries(ctx, src, names, dst, '', 0, excluded);
      result.flagged.sort();
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
 * extracted into) into the user's workspace (`toDir`). Git metadata and escaping links are skipped,
 * ENVRUN_SYNC_BACK_DENY is held back, files tools run are flagged; unchanged files are left alone.
 */
export async function safeCopyBack(
  fromDir: string,
  toDir: string,
  options: SafeCopyOptions = {},
): Promise<SafeCopyResult> {
  return safeCopyTree(fromDir, toDir, {
    skipGitMetadata: true,
    skipEscapingSymlinks: true,
    skipUnchanged: true,
    flagExecutableConfig: true,
    ...options,
    deny: options.deny ?? syncBackDeny(),
  });
}

/**
 * Upload: the user's workspace (`fromDir`, `.git` included) into a sandbox folder (`toDir`) that may hold
 * what an earlier run left (links included: never followed). Every file is rewritten; no size or file
 * count limit unless given.
 */
export function safeCopyIn(fromDir: string, toDir: string, options: SafeCopyOptions = {}): Promise<SafeCopyResult> {
  return safeCopyTree(fromDir, toDir, {
    skipGitMetadata: false,
    skipEscapingSymlinks: false,
    skipUnchanged: false,
    maxBytes: Infinity,
    maxFiles: Infinity,
    ...options,
  });
}

/** One line for logs and progress: what was copied, what was skipped and what was flagged (the first few). */
export function describeCopy(result: SafeCopyResult, max = 5): string {
  let line = `${result.copied} written, ${result.unchanged} unchanged, ${result.bytes} bytes`;
  if (result.skippedCount > 0) {
    const shown = result.skipped
      .slice(0, Math.max(0, max))
      .map((s) => `${s.path} (${s.reason})`)
      .join(', ');
    line +=
      max <= 0
        ? `; skipped ${result.skippedCount}`
        : `; skipped ${result.skippedCount}: ${shown}${result.skippedCount > max ? ', …' : ''}`;
  }
  if (result.flaggedCount > 0) {
    const shown = result.flagged.slice(0, Math.max(0, max)).join(', ');
    line +=
      max <= 0
        ? `; ${result.flaggedCount} files tools run changed`
        : `; ${result.flaggedCount} files tools run changed, review them: ${shown}${result.flaggedCount > max ? ', …' : ''}`;
  }
  return line;
}

/** Entries of each list a sync-back report keeps, and the longest string it keeps. */
const REPORTED_ENTRIES = 20;
const REPORTED_CHARS = 300;

/**
 * A sync-back's result (or its error) as stored on the lease and in its release's log row: the counts, and
 * the first entries of each list (skipped, flagged), cut short.
 */
export function syncBackReport(result: SafeCopyResult | { error: string }): Record<string, unknown> {
  const cut = (v: unknown): unknown => {
    if (typeof v === 'string') return v.length > REPORTED_CHARS ? `${v.slice(0, REPORTED_CHARS)}…` : v;
    if (Array.isArray(v)) return v.slice(0, REPORTED_ENTRIES).map(cut);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, cut(x)]));
    return v;
  };
  return cut(result) as Record<string, unknown>;
}
