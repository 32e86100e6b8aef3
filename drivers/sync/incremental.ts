// Copying a workspace into a sandbox folder that was copied into before, writing only what changed since.
// Each copy leaves a baseline of what it wrote, as read from the source: every file's size, modification
// time, mode and sha256, the folders, and the links with their text. The next copy walks the source
// against it (every folder opened through the one above it, no link followed, the depth limit of
// safeCopyIn): a file of the baseline's size, mode and modification time is left alone, and so is one of
// its size and mode whose content hashes the same; anything else goes through safeCopyIn with `only` (the
// same rules as a full copy). What the baseline has and the source no longer has is removed from the target
// with removeEntries (files and links; folders once empty), never through a link. What the sandbox made or
// changed itself (a provision command's node_modules), where the source did not change, stays as it is.
// As root, only what was written is given to the sandbox's owner (chownEntries).
//
// The baseline is the caller's to keep where the sandbox cannot reach it. It is deleted before anything is
// written and written again once the copy is done, so a copy cut short leaves none; a baseline missing,
// unreadable, malformed or made for another target folder (by device and inode) means a full copy. A folder
// removed and made again may get its inode back: whoever removes the target forgets its baseline first.
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants as C,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  realpathSync,
  type Stats,
} from 'node:fs';
import { lstat, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import {
  SyncTooLargeError,
  maxWorkspaceDepth,
  safeCopyIn,
  type SafeCopyResult,
  type WrittenEntry,
  emptyCopyResult,
  fileMode,
} from './safe-copy.js';
import { chownEntries, chownTree, removeEntries } from './safe-remove.js';

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
/**
 * The walk gives the event loop a turn once it has held it this long (checked every ENTRIES_PER_CHECK
 * entries): a thousand unchanged files are one slice, a huge tree many.
 */
const SLICE_MS = 10;
const ENTRIES_PER_CHECK = 64;
/** Bytes hashed between two turns of the event loop. */
const BYTES_PER_TURN = 8 * 1024 * 1024;
const HASH_BUFFER = 1024 * 1024;

const RelPath = z
  .string()
  .refine((p) => p.split('/').every((n) => n !== '' && n !== '.' && n !== '..'), 'not a path inside the folder');
const FileRecord = z
  .object({
    path: RelPath,
    size: z.number().int().nonnegative(),
    mtimeMs: z.number(),
    mode: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();
type FileRecord = z.infer<typeof FileRecord>;
const Target = z.object({ dev: z.number(), ino: z.number() }).strict();
type Target = z.infer<typeof Target>;
const BaselineFile = z
  .object({
    version: z.literal(1),
    /** The target folder it was made for (a folder made again is not it). */
    target: Target,
    files: z.array(FileRecord),
    dirs: z.array(RelPath),
    links: z.array(z.object({ path: RelPath, text: z.string() }).strict()),
  })
  .strict();

/** What a copy wrote, by path. */
export interface Baseline {
  target: Target;
  files: Map<string, FileRecord>;
  dirs: Set<string>;
  links: Map<string, string>;
}

export interface IncrementalCopyOptions {
  /** The baseline's file, in a folder of the caller's own (its folder must exist). */
  baseline: string;
  /** As root: who the target's entries belong to (those written; the whole tree after a full copy). */
  owner?: { uid: number; gid: number } | null;
  signal?: AbortSignal | undefined;
  /** Folders the source may nest: maxWorkspaceDepth() by default. */
  maxDepth?: number;
}

export interface IncrementalCopyResult {
  /** What safeCopyIn did; files and links left alone are counted in `unchanged`. */
  result: SafeCopyResult;
  /** Entries of the last copy the source no longer has, removed from the target. */
  removed: number;
  /** Was there a baseline to copy against (else everything was copied)? */
  incremental: boolean;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;
const at = (fd: number, name: string) => `/proc/self/fd/${fd}/${name}`;
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('copy aborted');
}

/**
 * The baselines this process wrote, by file, with the file's identity then (device, inode, size, times):
 * reading one back that is still that file skips parsing and checking it again (a thousand records take
 * milliseconds). A file changed or replaced since is read from disk as before. Read-only: nothing changes a
 * baseline once written (the next one is built from new maps).
 */
const writtenBaselines = new Map<string, { identity: string; baseline: Baseline }>();
const MAX_REMEMBERED_BASELINES = 1024;
const identityOf = (st: Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

function remember(file: string, baseline: Baseline): void {
  let st: Stats;
  try {
    st = lstatSync(file);
  } catch {
    writtenBaselines.delete(file);
    return;
  }
  writtenBaselines.delete(file); // re-inserted last: the oldest goes first
  writtenBaselines.set(file, { identity: identityOf(st), baseline });
  if (writtenBaselines.size > MAX_REMEMBERED_BASELINES) {
    writtenBaselines.delete(writtenBaselines.keys().next().value!);
  }
}

/** The baseline in `file`, or null when it is missing, unreadable or malformed. */
export async function readBaseline(file: string): Promise<Baseline | null> {
  const remembered = writtenBaselines.get(file);
  if (remembered) {
    let st: Stats | null = null;
    try {
      st = lstatSync(file);
    } catch {
      /* gone: read below, which says so */
    }
    if (st?.isFile() && identityOf(st) === remembered.identity) return remembered.baseline;
    writtenBaselines.delete(file);
  }
  try {
    const parsed = BaselineFile.safeParse(JSON.parse(await readFile(file, 'utf8')));
    if (!parsed.success) return null;
    const { target, files, dirs, links } = parsed.data;
    return {
      target,
      files: new Map(files.map((f) => [f.path, f])),
      dirs: new Set(dirs),
      links: new Map(links.map((l) => [l.path, l.text])),
    };
  } catch {
    return null;
  }
}

/** Writes the baseline to `file` (mode 0600), whole or not at all. */
export async function writeBaseline(file: string, baseline: Baseline): Promise<void> {
  writtenBaselines.delete(file);
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const data: z.infer<typeof BaselineFile> = {
    version: 1,
    target: baseline.target,
    files: [...baseline.files.values()],
    dirs: [...baseline.dirs],
    links: [...baseline.links].map(([path, text]) => ({ path, text })),
  };
  await writeFile(temp, JSON.stringify(data), { mode: 0o600, flag: 'wx' });
  try {
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  remember(file, baseline);
}

export async function forgetBaseline(file: string): Promise<void> {
  writtenBaselines.delete(file);
  await unlink(file).catch((err: unknown) => {
    if (errno(err) !== 'ENOENT') throw err;
  });
}

async function targetOf(toDir: string): Promise<Target> {
  const st = await lstat(toDir);
  if (!st.isDirectory()) throw new Error(`target ${toDir} is not a folder`);
  return { dev: st.dev, ino: st.ino };
}

type Kind = 'file' | 'dir' | 'link' | 'other';

interface Diff {
  /** Source entries to copy. */
  only: Set<string>;
  /** What every source entry is. */
  kinds: Map<string, Kind>;
  /** The next baseline's records of what is left alone. */
  kept: Pick<Baseline, 'files' | 'dirs' | 'links'>;
  /** Files and links left alone. */
  unchanged: number;
  /** Records left alone whose source stat is not the baseline's (same content). */
  restated: number;
}

/** The sha256 of a regular file of the open folder `dir`, or null when it is not that file any more. */
async function hashOf(dir: number, name: string, st: Stats, buffer: Buffer, signal?: AbortSignal) {
  let fd: number;
  try {
    fd = openSync(at(dir, name), READ_FLAGS);
  } catch {
    return null;
  }
  try {
    const now = fstatSync(fd);
    if (!now.isFile() || now.ino !== st.ino || now.dev !== st.dev) return null;
    const hash = createHash('sha256');
    for (let sinceTurn = 0; ;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      if ((sinceTurn += n) >= BYTES_PER_TURN) {
        sinceTurn = 0;
        await turn();
        checkAbort(signal);
      }
    }
    return hash.digest('hex');
  } finally {
    closeSync(fd);
  }
}

/** Walks the source against the baseline: what to copy, and what is left alone. Throws where safeCopyIn would. */
async function diffSource(
  fromDir: string,
  before: Baseline,
  maxDepth: number,
  signal: AbortSignal | undefined,
): Promise<Diff> {
  const diff: Diff = {
    only: new Set(),
    kinds: new Map(),
    kept: { files: new Map(), dirs: new Set(), links: new Map() },
    unchanged: 0,
    restated: 0,
  };
  const buffer = Buffer.allocUnsafe(HASH_BUFFER);
  let entries = 0;
  let sliceStart = performance.now();
  const visit = async (dir: number, rel: string, depth: number): Promise<void> => {
    for (const name of readdirSync(`/proc/self/fd/${dir}`)) {
      if (++entries % ENTRIES_PER_CHECK === 0 && performance.now() - sliceStart >= SLICE_MS) {
        await turn();
        sliceStart = performance.now();
        checkAbort(signal);
      }
      const path = rel ? `${rel}/${name}` : name;
      let st: Stats;
      try {
        st = lstatSync(at(dir, name));
      } catch (err) {
        if (errno(err) === 'ENOENT') continue; // gone since it was listed
        throw err;
      }
      if (st.isDirectory()) {
        if (depth >= maxDepth)
          throw new SyncTooLargeError(
            `the workspace holds more than the limit of ${maxDepth} nested folders (ENVRUN_MAX_WORKSPACE_DEPTH)`,
          );
        diff.kinds.set(path, 'dir');
        // A folder that cannot be opened (unreadable, or changed meanwhile) throws: what it holds is not
        // known, so nothing of it may be taken for gone; the full copy says what it skips.
        const child = openSync(at(dir, name), DIR_FLAGS);
        try {
          if (before.dirs.has(path)) diff.kept.dirs.add(path);
          else diff.only.add(path);
          await visit(child, path, depth + 1);
        } finally {
          closeSync(child);
        }
      } else if (st.isSymbolicLink()) {
        diff.kinds.set(path, 'link');
        let text: string | null = null;
        try {
          text = readlinkSync(at(dir, name));
        } catch {
          /* changed meanwhile: the copy says so */
        }
        if (text !== null && before.links.get(path) === text) {
          diff.kept.links.set(path, text);
          diff.unchanged++;
        } else diff.only.add(path);
      } else if (st.isFile()) {
        diff.kinds.set(path, 'file');
        const was = before.files.get(path);
        const same =
          was !== undefined &&
          was.size === st.size &&
          fileMode(was.mode) === fileMode(st.mode) &&
          (was.mtimeMs === st.mtimeMs || (await hashOf(dir, name, st, buffer, signal)) === was.sha256);
        if (was && same) {
          const restated = was.mtimeMs !== st.mtimeMs || was.mode !== st.mode;
          if (restated) diff.restated++;
          diff.kept.files.set(path, restated ? { ...was, mtimeMs: st.mtimeMs, mode: st.mode } : was);
          diff.unchanged++;
        } else diff.only.add(path);
      } else {
        diff.kinds.set(path, 'other');
        diff.only.add(path); // the copy skips it and says why
      }
    }
  };
  const top = openSync(realpathSync(fromDir), DIR_FLAGS);
  try {
    await visit(top, '', 0);
  } finally {
    closeSync(top);
  }
  return diff;
}

/** The baseline of what a copy wrote, with the records kept from before. */
function nextBaseline(target: Target, kept: Diff['kept'], written: Map<string, WrittenEntry>): Baseline {
  const baseline: Baseline = { target, files: kept.files, dirs: kept.dirs, links: kept.links };
  for (const entry of written.values()) {
    if (entry.kind === 'dir') baseline.dirs.add(entry.path);
    else if (entry.kind === 'link') baseline.links.set(entry.path, entry.text);
    else {
      const { path, size, mtimeMs, mode, sha256 } = entry;
      baseline.files.set(path, { path, size, mtimeMs, mode, sha256 });
    }
  }
  return baseline;
}

/** Entries of the baseline the source no longer has (as what they were). */
function goneFrom(before: Baseline, kinds: Map<string, Kind>): { path: string; kind: 'file' | 'folder' }[] {
  const gone: { path: string; kind: 'file' | 'folder' }[] = [];
  for (const path of before.files.keys()) if (kinds.get(path) !== 'file') gone.push({ path, kind: 'file' });
  for (const path of before.links.keys()) if (kinds.get(path) !== 'link') gone.push({ path, kind: 'file' });
  for (const path of before.dirs) if (kinds.get(path) !== 'dir') gone.push({ path, kind: 'folder' });
  return gone;
}

/**
 * Copies `fromDir` into the sandbox folder `toDir` with safeCopyIn, writing only what changed since the copy
 * the baseline describes (see the top of this file), and leaves the baseline of this copy.
 */
export async function copyInIncremental(
  fromDir: string,
  toDir: string,
  options: IncrementalCopyOptions,
): Promise<IncrementalCopyResult> {
  const { signal, owner } = options;
  const maxDepth = options.maxDepth ?? maxWorkspaceDepth();
  const target = await targetOf(toDir);
  const written = new Map<string, WrittenEntry>();
  const onWritten = (entry: WrittenEntry) => void written.set(entry.path, entry);

  const before = await readBaseline(options.baseline);
  let diff: Diff | null = null;
  if (before && before.target.dev === target.dev && before.target.ino === target.ino) {
    try {
      diff = await diffSource(fromDir, before, maxDepth, signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      // The full copy fails as this would have, or copies what this could not judge.
    }
  }
  if (!before || !diff) {
    await forgetBaseline(options.baseline);
    const result = await safeCopyIn(fromDir, toDir, { signal, maxDepth, onWritten });
    if (owner) await chownTree(toDir, owner.uid, owner.gid);
    const empty = { files: new Map(), dirs: new Set<string>(), links: new Map() };
    await writeBaseline(options.baseline, nextBaseline(target, empty, written));
    return { result, removed: 0, incremental: false };
  }

  const gone = goneFrom(before, diff.kinds);
  if (diff.only.size === 0 && gone.length === 0) {
    // Nothing to write: the baseline still holds (restated when a file was touched without changing).
    if (diff.restated > 0) await writeBaseline(options.baseline, nextBaseline(target, diff.kept, written));
    return { result: { ...emptyCopyResult(), unchanged: diff.unchanged }, removed: 0, incremental: true };
  }
  await forgetBaseline(options.baseline);
  const removed = gone.length > 0 ? await removeEntries(toDir, gone) : 0;
  const result =
    diff.only.size > 0
      ? await safeCopyIn(fromDir, toDir, { signal, maxDepth, only: diff.only, onWritten })
      : emptyCopyResult();
  result.unchanged += diff.unchanged;
  if (owner && written.size > 0) await chownEntries(toDir, [...written.keys()], owner.uid, owner.gid);
  // A changed entry the copy did not write (a folder in its way, changed meanwhile) keeps its old record,
  // stat included: the target still holds what it describes, and the next copy tries again.
  for (const path of diff.only) {
    if (written.has(path)) continue;
    const kind = diff.kinds.get(path);
    const file = before.files.get(path);
    const link = before.links.get(path);
    if (kind === 'file' && file) diff.kept.files.set(path, file);
    else if (kind === 'link' && link !== undefined) diff.kept.links.set(path, link);
  }
  await writeBaseline(options.baseline, nextBaseline(target, diff.kept, written));
  return { result, removed, incremental: true };
}
