// A lease's processes. Every sandbox is a pid namespace of its own, and all of a worker's sandboxes run as
// one host uid, so neither the uid nor a cgroup (v1 has no cgroup.kill) tells one lease's processes from
// another's: each sandbox is recorded instead, before its command may start, in a folder of the worker's
// own (never inside the lease's folder, which the sandbox writes), as the host pid of its namespace's init,
// that process's start time and the namespace. Killing that init kills everything in the namespace (the
// kernel's rule for a pid namespace); a record whose init is gone (or whose pid now names another process)
// is stale. The records are files, so a worker that restarted between a command and its lease's release
// still finds what that command left.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EnvRunError } from '../../../contracts/errors.js';
import { removeTree } from '../../sync/safe-remove.js';

/** How long a release waits for killed processes to be gone before it fails (and is retried). */
export const KILL_TIMEOUT_MS = 10_000;
/** A folder's marker: it is being released, no sandbox may start on it (`closed.<run>`: none of that run's). */
const CLOSED = 'closed';
const closedFor = (run: string) => `${CLOSED}.${createHash('sha256').update(run).digest('hex').slice(0, 16)}`;
const RECORD = /^(\d+)-(\d+)$/;

interface SandboxRecord {
  file: string;
  pid: number;
  start: string;
  ns: string;
  run: string;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** Field 22 of /proc/<pid>/stat (start time, in clock ticks since boot) and the state, or null when gone. */
function procStat(pid: number): { start: string; state: string } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold anything: count from the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const start = rest[19];
  return state && start ? { start, state } : null;
}

/** The pid namespace of host pid `pid` (a readlink of microseconds, so synchronous), or null when it is gone. */
function pidNamespace(pid: number | 'self'): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

const gone = (state: string) => state === 'Z' || state === 'X';

/** Every live host process in one of `namespaces`. */
async function processesIn(namespaces: Set<string>): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const ns = pidNamespace(Number(name));
    if (!ns || !namespaces.has(ns)) continue;
    const st = procStat(Number(name));
    if (st && !gone(st.state)) found.push(Number(name));
  }
  return found;
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
}

/** A sandbox asked to start in a lease that is releasing (its folder closed to new sandboxes). */
export class LeaseClosedError extends EnvRunError {
  override name = 'LeaseClosedError';
  override readonly code = 'lease_closed';
}

export function createProcessTracker(dir: string) {
  const folderOf = (lease: string) => join(dir, lease);

  async function records(lease: string): Promise<SandboxRecord[]> {
    let names: string[];
    try {
      names = await readdir(folderOf(lease));
    } catch (err) {
      if (errno(err) === 'ENOENT') return [];
      throw err;
    }
    const found: SandboxRecord[] = [];
    for (const file of names) {
      const m = RECORD.exec(file);
      if (!m) continue;
      const content = await readFile(join(folderOf(lease), file), 'utf8').catch(() => null);
      if (content === null) continue;
      try {
        const { ns, run } = JSON.parse(content) as { ns: string; run: string };
        found.push({ file, pid: Number(m[1]), start: m[2]!, ns, run });
      } catch {
        /* half written by a worker that died: its sandbox never started (the command waits for the record) */
      }
    }
    return found;
  }

  /** The record's init as it is now: 'running', 'ended' (a zombie: its namespace is empty) or 'gone'. */
  function initOf(r: SandboxRecord): 'running' | 'ended' | 'gone' {
    const st = procStat(r.pid);
    if (!st || st.start !== r.start) return 'gone';
    return gone(st.state) ? 'ended' : 'running';
  }

  return {
    /**
     * Records the sandbox whose namespace's init is host pid `pid`, for the lease folder `lease` and run
     * `run`. Its command must not start before this resolves. Returns what removes the record once the
     * sandbox has ended. Throws LeaseClosedError when the lease is being released.
     */
    async record(lease: string, run: string, pid: number): Promise<() => Promise<void>> {
      // Synchronous: a handful of metadata calls between the sandbox's start and its command's, each a
      // few microseconds, that would otherwise each wait for a thread of the pool and a turn of the loop.
      const st = procStat(pid);
      const ns = pidNamespace(pid);
      if (!st || !ns) throw new Error(`the sandbox (host pid ${pid}) ended before it was recorded`);
      if (ns === pidNamespace('self')) throw new Error(`host pid ${pid} is not in a pid namespace of its own`);
      mkdirSync(folderOf(lease), { recursive: true, mode: 0o700 });
      const r: SandboxRecord = { file: `${pid}-${st.start}`, pid, start: st.start, ns, run };
      const file = join(folderOf(lease), r.file);
      writeFileSync(file, JSON.stringify({ ns, run }), { mode: 0o600 });
      const remove = () => unlink(file).catch(() => undefined);
      /** The command is over: its init ends with it (or is ended here), then the record goes. */
      const ended = async () => {
        const deadline = Date.now() + KILL_TIMEOUT_MS;
        // The init usually ends a moment after the command: looked at again after 1 ms, then less often.
        for (let wait = 1; initOf(r) === 'running'; wait = Math.min(wait * 2, 20)) {
          if (Date.now() > deadline) return; // kept: the release kills it, or fails saying so
          kill(pid);
          await new Promise((resolve) => setTimeout(resolve, wait));
        }
        await remove();
      };
      // Written before the release's marker is read: either the release sees this record, or this sees its marker.
      const closed = (marker: string) => existsSync(join(folderOf(lease), marker));
      if (closed(CLOSED) || closed(closedFor(run))) {
        kill(pid);
        await remove();
        throw new LeaseClosedError('the lease is being released: no command may start in it');
      }
      return ended;
    },

    /**
     * Sandboxes may start on the lease folder again: it is made again (a reused key), or, with `run`, that
     * run's release of a folder that is kept is done.
     */
    async reopen(lease: string, run?: string): Promise<void> {
      await rm(join(folderOf(lease), run === undefined ? CLOSED : closedFor(run)), { force: true });
    },

    /**
     * Closes the lease folder (with `run`: to that run, for a folder that is kept, shared with other runs'
     * sandboxes), then kills the sandboxes recorded for it (only that run's) and waits until none of their
     * processes is left. Returns how many sandboxes were still running.
     */
    async killAll(
      lease: string,
      { run, timeoutMs = KILL_TIMEOUT_MS }: { run?: string; timeoutMs?: number } = {},
    ): Promise<number> {
      await mkdir(folderOf(lease), { recursive: true, mode: 0o700 });
      await writeFile(join(folderOf(lease), run === undefined ? CLOSED : closedFor(run)), '');
      const mine = (await records(lease)).filter((r) => run === undefined || r.run === run);
      const running: SandboxRecord[] = [];
      for (const r of mine) if (initOf(r) === 'running' && pidNamespace(r.pid) === r.ns) running.push(r);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        // When a namespace's init has ended, the kernel has killed the rest of it: that is the check. The
        // scan of /proc kills what else is in those namespaces, while their init still holds them (a
        // namespace, once freed, may give its number to another sandbox's).
        const active = running.filter((r) => initOf(r) === 'running');
        if (active.length === 0) break;
        if (Date.now() > deadline) {
          throw new Error(
            `the sandbox's processes are still running ${timeoutMs} ms after being killed (host pids ${active.map((r) => r.pid).join(', ')})`,
          );
        }
        const found = await processesIn(new Set(active.map((r) => r.ns)));
        const held = active.filter((r) => initOf(r) !== 'gone');
        for (const r of held) kill(r.pid);
        if (held.length === active.length) for (const pid of found) kill(pid);
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const r of mine) await unlink(join(folderOf(lease), r.file)).catch(() => undefined);
      return running.length;
    },

    /** Drops the lease folder's records and markers (the folder is gone, and nothing of it runs). */
    async forget(lease: string): Promise<void> {
      await removeTree(folderOf(lease));
    },
  };
}
export type ProcessTracker = ReturnType<typeof createProcessTracker>;
