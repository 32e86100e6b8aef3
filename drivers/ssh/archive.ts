// Shipping a workspace to an ssh host and its changes back: tar streams over the connection, never held
// whole in memory, no path left to a shell, and nothing that comes back trusted (syncBack).
import { spawn } from 'node:child_process';
import { lstat, mkdtemp, realpath } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import type { Client } from 'ssh2';
import type { WorkspaceRealizationRecord } from '../../contracts/index.js';
import { gitHardeningArgs, runGit } from '../git.js';
import { DEFAULT_PATH, TailBuffer } from '../process.js';
import type { StepContext } from '../types.js';
import {
  DEFAULT_SYNC_TIMEOUT_MS,
  SyncTooLargeError,
  describeCopy,
  maxWorkspaceBytes,
  safeCopyBack,
  type SafeCopyResult,
} from '../sync/safe-copy.js';
import { removeTree } from '../sync/safe-remove.js';
import { remoteExec, shellQuote } from './connection.js';

/** How long a sync-back (download, extraction and copy into the local workspace) may take. */
const SYNC_BACK_TIMEOUT_MS = DEFAULT_SYNC_TIMEOUT_MS;
const TAR_ENV = { PATH: DEFAULT_PATH, LC_ALL: 'C' };

/** Is `dir` the top of a git work tree? Then the upload ships what git would. */
export async function isGitRoot(dir: string): Promise<boolean> {
  try {
    const top = await runGit(['rev-parse', '--show-toplevel'], { cwd: dir, timeoutMs: 60_000 });
    return (await realpath(top.trim())) === (await realpath(dir));
  } catch {
    return false;
  }
}

/**
 * `.git` plus what git would ship: tracked files and untracked ones that are not ignored. A listed path
 * below a symlink (the index can name `dir/file` where `dir` is now a link out of the workspace) is left
 * out: tar would read it through the link.
 */
async function gitFiles(dir: string): Promise<string[]> {
  const listed = (
    await runGit(['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
      cwd: dir,
      maxBuffer: 256 * 1024 ** 2,
    })
  )
    .split('\0')
    .filter(Boolean);
  const folders = new Map<string, Promise<boolean>>([['.', Promise.resolve(true)]]);
  const realFolder = (rel: string): Promise<boolean> => {
    let known = folders.get(rel);
    if (!known) {
      known = realFolder(posix.dirname(rel)).then(
        (parentOk) =>
          parentOk &&
          lstat(join(dir, rel)).then(
            (s) => s.isDirectory(),
            () => false,
          ),
      );
      folders.set(rel, known);
    }
    return known;
  };
  const keep: string[] = ['.git'];
  for (let i = 0; i < listed.length; i += 256) {
    const batch = listed.slice(i, i + 256);
    const ok = await Promise.all(
      batch.map(
        async (f) =>
          (await realFolder(posix.dirname(f))) &&
          lstat(join(dir, f)).then(
            () => true,
            () => false,
          ),
      ),
    );
    batch.forEach((f, j) => ok[j] && keep.push(f));
  }
  return keep;
}

interface TarProcess {
  stdout: Readable;
  /** Resolves when tar exits 0; rejects with its stderr otherwise. */
  done: Promise<void>;
  kill(): void;
}

/** A tar archive of a folder (or of the listed paths in it), as a stream: never held whole in memory. */
function tarCreate(dir: string, files: string[] | null): TarProcess {
  const tar = spawn('tar', files ? ['-C', dir, '-cf', '-', '--null', '-T', '-'] : ['-C', dir, '-cf', '-', '.'], {
    stdio: [files ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    env: TAR_ENV,
  });
  const stderr = new TailBuffer(8192);
  tar.stderr!.on('data', (c: Buffer) => stderr.push(c));
  const done = new Promise<void>((resolve, reject) => {
    tar.on('error', reject);
    tar.on('close', (code, signal) =>
      code === 0
        ? resolve()
        : reject(new Error(`tar of ${dir} failed: ${stderr.toString().trim() || signal || `exit ${code}`}`)),
    );
  });
  if (files && tar.stdin) {
    tar.stdin.on('error', () => undefined); // tar exiting early is reported by its exit code, not a crash
    tar.stdin.end(files.join('\0'));
  }
  return { stdout: tar.stdout!, done, kill: () => tar.kill('SIGKILL') };
}

/** A git command for the ssh host: hardened like the worker's own (no hooks, fsmonitor, config from outside the repo). */
function remoteGit(args: string[]): string {
  const env = [
    'PATH=' + DEFAULT_PATH,
    'HOME=/nonexistent',
    'GIT_CONFIG_NOSYSTEM=1',
    'GIT_CONFIG_GLOBAL=/dev/null',
    'GIT_TERMINAL_PROMPT=0',
  ];
  return ['env', '-i', ...env, 'git', ...gitHardeningArgs(), ...args].map(shellQuote).join(' ');
}

/**
 * Uploads the local workspace: local tar → ssh → remote tar, streamed (the archive is never held in
 * memory); no shell on either side interprets a path. A git workspace ships .git and the files git would
 * (tracked, and untracked but not ignored).
 */
export async function upload(
  client: Client,
  local: string,
  remote: string,
  git: boolean,
  signal: AbortSignal | undefined,
): Promise<number> {
  const tar = tarCreate(local, git ? await gitFiles(local) : null);
  const failed = tar.done.then(
    () => null,
    (err: Error) => err,
  );
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  tar.stdout.on('error', () => undefined);
  tar.stdout.pipe(counted);
  const res = await remoteExec(client, {
    command: `mkdir -p -- ${shellQuote(remote)} && tar -C ${shellQuote(remote)} --no-same-owner -xf -`,
    stdin: counted,
    timeoutMs: 10 * 60_000,
    signal,
  });
  tar.stdout.unpipe(counted);
  if (res.exitCode !== 0 || res.timedOut)
    tar.kill(); // the remote end failed: tar would wait on a full pipe
  else tar.stdout.resume(); // what the remote tar did not read (padding) is dropped
  const tarError = await failed;
  if (res.timedOut) throw new Error('workspace upload timed out after 600000 ms');
  if (tarError && res.exitCode !== 0) throw tarError;
  if (res.exitCode !== 0)
    throw new Error(`workspace upload failed (exit ${res.exitCode}): ${res.stderr.trim().split('\n')[0] ?? ''}`);
  if (tarError) throw tarError;
  return bytes;
}

interface ReceiveOptions {
  maxBytes: number;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Runs `command` on the ssh host and extracts the tar archive it prints into `staging` (a fresh, private
 * folder), streamed: at most `maxBytes` are accepted (more fails the whole transfer), within `timeoutMs`.
 * Extraction keeps no owner and no permissions from the archive, replaces no folder's metadata, and GNU
 * tar's own rules apply (no absolute names, no `..`, links in the archive made last).
 */
function receiveArchive(client: Client, command: string, staging: string, o: ReceiveOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, channel) => {
      if (err) return reject(err);
      const untar = spawn(
        'tar',
        [
          '-x',
          '-f',
          '-',
          '-C',
          staging,
          '--no-same-owner',
          '--no-same-permissions',
          '--no-overwrite-dir',
          '--delay-directory-restore',
        ],
        {
          stdio: ['pipe', 'ignore', 'pipe'],
          env: TAR_ENV,
        },
      );
      const remoteErr = new TailBuffer(8192);
      const tarErr = new TailBuffer(8192);
      let received = 0;
      let failure: Error | null = null;
      let tarExit: number | null = null;
      let sinkOpen = true;
      let open = 2; // the channel and tar
      const abort = (e: Error) => {
        if (failure) return;
        failure = e;
        untar.kill('SIGKILL');
        channel.close();
      };
      const timer = setTimeout(() => abort(new Error(`timed out after ${o.timeoutMs} ms`)), o.timeoutMs);
      const onAbort = () => abort(new Error('cancelled'));
      o.signal?.addEventListener('abort', onAbort, { once: true });
      const finish = () => {
        if (--open > 0) return;
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
        if (failure) return reject(failure);
        if (tarExit !== 0) {
          const local = tarErr.toString().trim().split('\n')[0] || 'no message';
          const remote = remoteErr.toString().trim().split('\n')[0];
          return reject(new Error(`tar exit ${tarExit}: ${local}${remote ? ` (ssh host: ${remote})` : ''}`));
        }
        resolve();
      };
      channel.on('data', (d: Buffer) => {
        received += d.length;
        if (received > o.maxBytes) {
          return abort(
            new SyncTooLargeError(
              `the workspace sent more than the limit of ${o.maxBytes} bytes (ENVRUN_MAX_WORKSPACE_BYTES)`,
            ),
          );
        }
        if (sinkOpen && !untar.stdin.write(d)) channel.pause();
      });
      untar.stdin.on('drain', () => channel.resume());
      untar.stdin.on('error', () => undefined); // tar's exit code says what happened
      channel.stderr.on('data', (d: Buffer) => remoteErr.push(d));
      untar.stderr.on('data', (d: Buffer) => tarErr.push(d));
      channel.on('error', (e: Error) => abort(e));
      channel.on('end', () => untar.stdin.end());
      channel.on('close', () => {
        untar.stdin.end();
        finish();
      });
      untar.on('error', (e) => {
        abort(e);
      });
      untar.on('close', (code) => {
        tarExit = code;
        sinkOpen = false;
        channel.resume(); // whatever still comes is dropped (and counted)
        finish();
      });
    });
  });
}

/**
 * Brings the remote workspace's changes back into the local one, trusting nothing in them: the archive is
 * extracted into a fresh staging folder, then copied in by safeCopyBack (no symlink followed, no owners,
 * no setuid, no FIFOs or devices, nothing of git's: see drivers/sync/safe-copy.ts). Over the size limit
 * or the time limit, nothing is written into the local workspace.
 */
export async function syncBack(
  client: Client,
  realization: WorkspaceRealizationRecord,
  ctx: StepContext,
): Promise<SafeCopyResult> {
  const local = realization.local.path;
  const dir = shellQuote(realization.remote.path);
  // No .git: git metadata never comes back (safeCopyBack would skip it anyway).
  const exportCmd =
    realization.sync.strategy === 'ssh_git_import_export'
      ? `cd -- ${dir} && ${remoteGit(['ls-files', '-z', '--cached', '--others', '--exclude-standard'])} | tar -cf - --null -T -`
      : `tar -C ${dir} -cf - .`;
  const maxBytes = maxWorkspaceBytes();
  const deadline = Date.now() + SYNC_BACK_TIMEOUT_MS;
  const staging = await mkdtemp(join(tmpdir(), 'envrun-sync-'));
  try {
    try {
      await receiveArchive(client, exportCmd, staging, {
        maxBytes,
        timeoutMs: SYNC_BACK_TIMEOUT_MS,
        signal: ctx.signal,
      });
    } catch (err) {
      throw new Error(`sync back to ${local} failed: ${(err as Error).message}; nothing was written into it`);
    }
    const timeoutMs = Math.max(1, deadline - Date.now());
    const result = await safeCopyBack(staging, local, { maxBytes, signal: ctx.signal, timeoutMs }).catch(
      (err: Error) => {
        throw new Error(`sync back to ${local} failed: ${err.message}`);
      },
    );
    ctx.progress?.(`synced back into ${local}: ${describeCopy(result)}`);
    return result;
  } finally {
    await removeTree(staging).catch(() => undefined);
  }
}
