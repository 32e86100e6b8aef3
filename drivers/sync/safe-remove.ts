// Deleting and chowning a tree that agent code wrote (a sandbox's lease folder, an archive's staging
// folder), as root, without ever following a link:
//  - every folder is opened with O_NOFOLLOW | O_DIRECTORY through the open folder above it
//    (/proc/self/fd/N/name, i.e. openat), and every entry is unlinked, removed or chowned through its open
//    folder: a link swapped in for a folder at any moment is removed (or chowned) as a link, never entered;
//  - the walk is iterative and holds one folder open at a time: it goes back up through `..`, checked
//    against the device and inode it came down through (a folder moved meanwhile makes it start again
//    from the top, never walk above it), so 10,000-deep nesting needs neither stack nor descriptors;
//  - folders without permissions (mode 000) are made usable through their own handle first (a worker that
//    is not root could not read or empty them otherwise); names are bytes (newlines, invalid UTF-8);
//  - no other file system is entered.
// Only the top folder is named by a path: its parents are the caller's own, trusted folders. removeEntries
// and chownEntries act on single entries below it, named by paths but reached the same way.
import { constants as C, type Stats } from 'node:fs';
import { chmod, lchown, lstat, open, readdir, rmdir, unlink, type FileHandle } from 'node:fs/promises';

/** O_PATH (Linux): a handle to an inode that grants nothing by itself; fstat and /proc/self/fd/N work on it. */
const O_PATH = 0o10000000;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
/** Times a folder is read again before it is left, in case something appeared while it was emptied. */
const MAX_REREADS = 8;
/** Times the walk starts over after a folder it was in moved. */
const MAX_RESTARTS = 32;
/** Entries looked at again (a folder that became something else, a folder not empty yet) in one walk. */
const MAX_REVISITS = 100_000;

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
const at = (dir: FileHandle, name: Buffer) => Buffer.concat([Buffer.from(`/proc/self/fd/${dir.fd}/`), name]);
const isRoot = () => process.getuid?.() === 0;

/** Hooks for tests: called at the points where a racing agent would strike (relative paths, `/`-separated). */
export interface WalkHooks {
  /** A folder was found by its name and is about to be opened. */
  beforeOpen?: (path: string) => void | Promise<void>;
  /** A folder was opened and is about to be read. */
  afterOpen?: (path: string) => void | Promise<void>;
}

export interface WalkOptions {
  hooks?: WalkHooks;
}

interface Frame {
  name: Buffer;
  dev: number;
  ino: number;
  pending: Buffer[] | null;
  rereads: number;
}

interface Visitor {
  /** The top folder was opened. */
  top?(dir: FileHandle): Promise<void>;
  /** An entry of the open folder `dir`: 'folder' descends into it, 'done' goes on. */
  entry(dir: FileHandle, name: Buffer): Promise<'folder' | 'done'>;
  /** A folder was opened (before it is read). */
  enter?(dir: FileHandle): Promise<void>;
  /** Done with folder `name` of `parent`: 'again' reads it once more. */
  leave?(parent: FileHandle, name: Buffer): Promise<'again' | 'done'>;
  /** Read each folder again until it has nothing new before leaving it. */
  reread: boolean;
}

class TreeMoved extends Error {}

const rel = (stack: Frame[], name?: Buffer) =>
  [...stack.slice(1).map((f) => f.name), ...(name ? [name] : [])].map((n) => n.toString('utf8')).join('/');

/** Opens folder `name` of `dir` without following a link; a folder without permissions is made usable. Null when it is no folder (now). */
async function openFolder(dir: FileHandle, name: Buffer): Promise<FileHandle | null> {
  try {
    const fh = await open(at(dir, name), DIR_FLAGS);
    if (!isRoot()) {
      const st = await fh.stat();
      if ((st.mode & 0o700) !== 0o700) await fh.chmod((st.mode & 0o7777) | 0o700);
    }
    return fh;
  } catch (err) {
    const code = errno(err);
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return null;
    if (code !== 'EACCES') throw err;
  }
  // No read permission (a worker that is not root): chmod the folder through an O_PATH handle to it, then
  // open that same inode through the handle (the magic link cannot be swapped).
  const handle = await open(at(dir, name), O_PATH | C.O_NOFOLLOW);
  try {
    const st = await handle.stat();
    if (!st.isDirectory()) return null;
    await chmod(`/proc/self/fd/${handle.fd}`, (st.mode & 0o7777) | 0o700);
    const fh = await open(`/proc/self/fd/${handle.fd}`, C.O_RDONLY | C.O_DIRECTORY);
    const again = await fh.stat();
    if (again.ino !== st.ino || again.dev !== st.dev) {
      await fh.close();
      return null;
    }
    return fh;
  } finally {
    await handle.close();
  }
}

/** Opens the folder above `dir`, which must be the one the walk came down through. */
async function openParent(dir: FileHandle, expected: Frame): Promise<FileHandle> {
  const parent = await open(`/proc/self/fd/${dir.fd}/..`, DIR_FLAGS);
  const st = await parent.stat();
  if (st.dev !== expected.dev || st.ino !== expected.ino) {
    await parent.close();
    throw new TreeMoved();
  }
  return parent;
}

async function names(dir: FileHandle): Promise<Buffer[]> {
  return readdir(`/proc/self/fd/${dir.fd}`, { encoding: 'buffer' });
}

/**
 * Walks the tree under the open top folder, post-order, holding one folder open at a time. Throws
 * TreeMoved when a folder it was in moved (the caller starts over).
 */
async function walkOnce(top: FileHandle, topStat: Stats, visitor: Visitor, hooks: WalkHooks): Promise<void> {
  const stack: Frame[] = [{ name: Buffer.alloc(0), dev: topStat.dev, ino: topStat.ino, pending: null, rereads: 0 }];
  let cur = top;
  let revisits = 0;
  const revisit = (pending: Buffer[], name: Buffer) => {
    if (++revisits > MAX_REVISITS) throw new Error(`${rel(stack, name)} kept changing while it was walked`);
    pending.push(name);
  };
  try {
    for (;;) {
      const frame = stack[stack.length - 1]!;
      if (frame.pending === null) frame.pending = await names(cur);
      const name = frame.pending.pop();
      if (name === undefined) {
        if (visitor.reread && frame.rereads < MAX_REREADS) {
          frame.rereads++;
          frame.pending = await names(cur);
          if (frame.pending.length > 0) continue;
        }
        if (stack.length === 1) return;
        const parentFrame = stack[stack.length - 2]!;
        const parent = await openParent(cur, parentFrame);
        await cur.close();
        cur = parent;
        stack.pop();
        if ((await visitor.leave?.(cur, frame.name)) === 'again') revisit((parentFrame.pending ??= []), frame.name);
        continue;
      }
      if ((await visitor.entry(cur, name)) !== 'folder') continue;
      await hooks.beforeOpen?.(rel(stack, name));
      const child = await openFolder(cur, name);
      if (!child) {
        revisit(frame.pending, name); // no folder any more: an entry like any other
        continue;
      }
      const st = await child.stat();
      if (st.dev !== topStat.dev) {
        await child.close(); // another file system (a mount): not entered
        continue;
      }
      await hooks.afterOpen?.(rel(stack, name));
      await visitor.enter?.(child);
      await cur.close();
      cur = child;
      stack.push({ name, dev: st.dev, ino: st.ino, pending: null, rereads: 0 });
    }
  } finally {
    if (cur !== top) await cur.close();
  }
}

async function walk(
  path: string,
  visitor: Visitor,
  options: WalkOptions,
): Promise<'walked' | 'absent' | 'not a folder'> {
  for (let restarts = 0; ; restarts++) {
    const top = await open(path, DIR_FLAGS).catch((err: unknown) => {
      const code = errno(err);
      if (code === 'ENOENT') return 'absent' as const;
      if (code === 'ELOOP' || code === 'ENOTDIR') return 'not a folder' as const;
      throw err;
    });
    if (typeof top === 'string') return top;
    try {
      const st = await top.stat();
      if (restarts === 0) await visitor.top?.(top);
      await walkOnce(top, st, visitor, options.hooks ?? {});
      return 'walked';
    } catch (err) {
      if (!(err instanceof TreeMoved)) throw err;
      if (restarts >= MAX_RESTARTS) throw new Error(`${path} kept changing while it was walked`);
    } finally {
      await top.close();
    }
  }
}

/**
 * `rm -rf path` that never follows a link (see the top of this file). A link or file at `path` itself is
 * unlinked, not followed. Throws only when the tree keeps changing or an entry cannot be removed.
 */
export async function removeTree(path: string, options: WalkOptions = {}): Promise<void> {
  const walked = await walk(
    path,
    {
      reread: true,
      async entry(dir, name) {
        try {
          await unlink(at(dir, name)); // unlink removes a link itself, never what it points at
          return 'done';
        } catch (err) {
          const code = errno(err);
          if (code === 'ENOENT') return 'done';
          if (code === 'EISDIR' || code === 'EPERM') return 'folder';
          throw err;
        }
      },
      async leave(parent, name) {
        try {
          await rmdir(at(parent, name));
          return 'done';
        } catch (err) {
          const code = errno(err);
          if (code === 'ENOENT') return 'done';
          if (code === 'ENOTEMPTY' || code === 'EEXIST') return 'again'; // something new appeared in it
          if (code === 'ENOTDIR') return 'again'; // a link took its place: removed as an entry
          throw err;
        }
      },
    },
    options,
  );
  if (walked === 'absent') return;
  if (walked === 'not a folder') {
    await unlink(path).catch((err: unknown) => {
      if (errno(err) !== 'ENOENT') throw err;
    });
    return;
  }
  await rmdir(path).catch((err: unknown) => {
    if (errno(err) !== 'ENOENT') throw err;
  });
}

/**
 * Gives the tree to `uid`/`gid`, links included (as links: lchown through the open folder), never following
 * one (see the top of this file).
 */
export async function chownTree(path: string, uid: number, gid: number, options: WalkOptions = {}): Promise<void> {
  const walked = await walk(
    path,
    {
      reread: false,
      top: (dir) => dir.chown(uid, gid),
      async entry(dir, name) {
        let st: Stats;
        try {
          st = await lstat(at(dir, name));
        } catch (err) {
          if (errno(err) === 'ENOENT') return 'done';
          throw err;
        }
        if (st.isDirectory()) return 'folder';
        await lchown(at(dir, name), uid, gid).catch((err: unknown) => {
          if (errno(err) !== 'ENOENT') throw err;
        });
        return 'done';
      },
      enter: (dir) => dir.chown(uid, gid),
    },
    options,
  );
  if (walked === 'not a folder') await lchown(path, uid, gid);
}

/** The names of a path relative to a folder; refused when one would leave it or name nothing. */
function namesOf(path: string): string[] {
  const parts = path.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..'))
    throw new Error(`not a path inside the folder: ${JSON.stringify(path)}`);
  return parts;
}

/**
 * The folders on the way to entries below an open top folder, each opened through the one above it as
 * the walk opens them (never a link, never another file system), and kept open while the next entries
 * share them: for acting on many entries named by sorted paths, one folder open per level.
 */
class FolderChain {
  private names: string[] = [];
  private dirs: FileHandle[] = [];
  constructor(
    private top: FileHandle,
    private dev: number,
  ) {}

  /** The folder `parts` below the top, or null when one on the way is no folder (now). */
  async open(parts: string[]): Promise<FileHandle | null> {
    let common = 0;
    while (common < this.dirs.length && common < parts.length && this.names[common] === parts[common]) common++;
    while (this.dirs.length > common) {
      this.names.pop();
      await this.dirs.pop()!.close();
    }
    for (let i = common; i < parts.length; i++) {
      const fh = await openFolder(i === 0 ? this.top : this.dirs[i - 1]!, Buffer.from(parts[i]!));
      if (!fh) return null;
      if ((await fh.stat()).dev !== this.dev) {
        await fh.close();
        return null;
      }
      this.dirs.push(fh);
      this.names.push(parts[i]!);
    }
    return parts.length === 0 ? this.top : this.dirs[parts.length - 1]!;
  }

  async close(): Promise<void> {
    for (const dir of this.dirs.splice(0)) await dir.close();
    this.names = [];
  }
}

/** Runs `act` on each entry (sorted paths, as their names) in its open folder, the folder `path` at the top. */
async function eachEntry(
  path: string,
  paths: readonly string[],
  descending: boolean,
  act: (dir: FileHandle, name: Buffer, path: string) => Promise<void>,
): Promise<void> {
  const sorted = [...paths].sort();
  if (descending) sorted.reverse(); // a folder after everything in it
  const named = sorted.map((p) => ({ path: p, names: namesOf(p) }));
  const top = await open(path, DIR_FLAGS);
  const chain = new FolderChain(top, (await top.stat()).dev);
  try {
    for (const entry of named) {
      const dir = await chain.open(entry.names.slice(0, -1));
      if (dir) await act(dir, Buffer.from(entry.names[entry.names.length - 1]!), entry.path);
    }
  } finally {
    await chain.close();
    await top.close();
  }
}

/**
 * Removes single entries below the folder `path` (paths relative to it, `/`-separated) without following a
 * link: each is reached through its folders as removeTree reaches them. A `file` entry is unlinked (a
 * file or a link; a folder found there stays), a `folder` entry removed only when empty (after the entries
 * listed in it). An entry that is not there, or is not what it was, stays. Returns how many were removed.
 */
export async function removeEntries(
  path: string,
  entries: readonly { path: string; kind: 'file' | 'folder' }[],
): Promise<number> {
  const folders = new Set(entries.filter((e) => e.kind === 'folder').map((e) => e.path));
  let removed = 0;
  await eachEntry(
    path,
    entries.map((e) => e.path),
    true,
    async (dir, name, entry) => {
      try {
        await (folders.has(entry) ? rmdir(at(dir, name)) : unlink(at(dir, name)));
        removed++;
      } catch (err) {
        const code = errno(err);
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST')
          return;
        throw err;
      }
    },
  );
  return removed;
}

/** Gives single entries below the folder `path` to `uid`/`gid` (links as links), reached as removeEntries reaches them. */
export async function chownEntries(path: string, paths: readonly string[], uid: number, gid: number): Promise<void> {
  await eachEntry(path, paths, false, async (dir, name) => {
    await lchown(at(dir, name), uid, gid).catch((err: unknown) => {
      if (errno(err) !== 'ENOENT') throw err;
    });
  });
}
