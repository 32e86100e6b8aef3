// Moving a workspace into a plugin's sandbox and back. In: the local workspace is first copied into a
// private staging folder (drivers/sync/safe-copy.ts: no link followed, no FIFO or device opened), then
// handed to the plugin: with `environmentSyncIn` when the worker offers it, else as a tar archive (base64 on
// stdin) unpacked by `sh` in the sandbox over `environmentExecute`. Back: the plugin writes the sandbox's
// workspace into another private staging folder (`environmentSyncOut`, else a base64 tar on stdout of
// `environmentExecute`, unpacked by the host's tar), and the sync-back rules of SECURITY.md apply from there:
// the same safe copy as bubblewrap's into the local workspace, what was skipped or flagged reported.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import type { PluginEnvironmentDriverBaseParams, PluginEnvironmentLease } from '@paperclipai/plugin-sdk/protocol';
import { NonRetryableError } from '../../../contracts/errors.js';
import {
  DEFAULT_SYNC_TIMEOUT_MS,
  describeCopy,
  safeCopyBack,
  safeCopyIn,
  syncBackReport,
  type SafeCopyResult,
} from '../../sync/safe-copy.js';
import { removeTree } from '../../sync/safe-remove.js';
import { ExecuteReply, SyncReply, workerUnavailable, type PluginCalls } from './calls.js';

/** The largest archive moved over environmentExecute (before base64): it travels in one JSON-RPC message. */
export const MAX_EXEC_ARCHIVE_BYTES = 64 * 1024 * 1024;
const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const UNPACK = 'mkdir -p -- "$1" && base64 -d | tar -xf - -C "$1"';
const PACK = 'cd -- "$1" && tar -cf - . | base64';
const OPERATION_ID = 'envrun-workspace';

export interface FileMove {
  calls: PluginCalls;
  /** The call's driver params and the lease. */
  params: PluginEnvironmentDriverBaseParams & { lease: PluginEnvironmentLease };
  /** The sandbox's workspace folder (the realized cwd). */
  cwd: string;
  /** Where the staging folders go (made 0700). */
  stagingRoot: string;
  signal?: AbortSignal | undefined;
  onProgress?: ((line: string) => void) | undefined;
}

async function staging(root: string, prefix: string): Promise<string> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  return mkdtemp(join(root, prefix));
}

/** Runs the host's tar; resolves with its stdout (capped) once it exits 0. */
function tar(args: string[], input: Buffer | null, signal: AbortSignal | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['pipe', 'pipe', 'pipe'], signal });
    const out: Buffer[] = [];
    let size = 0;
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_EXEC_ARCHIVE_BYTES) {
        child.kill('SIGKILL');
        reject(
          new NonRetryableError(
            `the workspace is over ${MAX_EXEC_ARCHIVE_BYTES} bytes as a tar archive: too large to move over environmentExecute (a plugin with environmentSyncIn/environmentSyncOut has no such limit)`,
          ),
        );
      } else out.push(c);
    });
    child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-2000)));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(out))
        : reject(new Error(`tar ${args[0]} failed (exit ${code}): ${err.trim()}`)),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? undefined);
  });
}

/** Puts the local workspace into the sandbox at `move.cwd`; says which method moved it. */
export async function pushWorkspace(
  move: FileMove,
  localPath: string,
): Promise<'environmentSyncIn' | 'environmentExecute'> {
  const { calls, params, cwd, signal } = move;
  const dir = await staging(move.stagingRoot, 'in-');
  try {
    const copied = await safeCopyIn(localPath, dir, { signal });
    let via: 'environmentSyncIn' | 'environmentExecute';
    if (calls.supports('environmentSyncIn')) {
      via = 'environmentSyncIn';
      const files = [{ sourcePath: dir, targetPath: cwd, kind: 'directory' as const, access: 'rw' as const }];
      await calls.call(
        'environmentSyncIn',
        { ...params, operations: [{ operationId: OPERATION_ID, files }] },
        SyncReply,
        { timeoutMs: DEFAULT_SYNC_TIMEOUT_MS, signal },
      );
    } else {
      via = 'environmentExecute';
      const archive = await tar(
        ['-cf', '-', '--numeric-owner', '--owner=0', '--group=0', '-C', dir, '.'],
        null,
        signal,
      );
      await sandboxShell(
        move,
        UNPACK,
        'envrun-sync-in',
        `${calls.label}: unpacking the workspace in the sandbox`,
        archive,
      );
    }
    move.onProgress?.(`moved ${localPath} into the sandbox at ${cwd} with ${via}: ${describeCopy(copied)}`);
    return via;
  } finally {
    await removeTree(dir);
  }
}

/** Runs `script` with `sh -c` in the sandbox (its `$1` the workspace), outside any session; fails unless it exits 0. */
async function sandboxShell(move: FileMove, script: string, name: string, what: string, stdin?: Buffer) {
  const reply = await move.calls.call(
    'environmentExecute',
    {
      ...move.params,
      command: 'sh',
      args: ['-c', script, name, move.cwd],
      env: { PATH: SANDBOX_PATH },
      ...(stdin ? { stdin: stdin.toString('base64') } : {}),
      timeoutMs: DEFAULT_SYNC_TIMEOUT_MS,
      bypassSession: true,
    },
    ExecuteReply,
    { timeoutMs: DEFAULT_SYNC_TIMEOUT_MS + 30_000, signal: move.signal },
  );
  if (reply.exitCode !== 0)
    throw new Error(`${what} failed (exit ${reply.exitCode ?? reply.signal}): ${reply.stderr.slice(-500).trim()}`);
  return reply;
}

/**
 * Syncs the sandbox's workspace back into `syncBackTo` and returns the report stored on the lease. Whatever
 * the sandbox holds cannot fail the release: a failure is reported. Only a worker that is down or restarting
 * fails it (the release is retried rather than ending the sandbox with the agent's changes in it).
 */
export async function pullWorkspace(move: FileMove, syncBackTo: string): Promise<Record<string, unknown>> {
  const { calls, params, cwd, signal } = move;
  const dir = await staging(move.stagingRoot, 'out-');
  try {
    if (calls.supports('environmentSyncOut')) {
      const files = [{ sourcePath: cwd, targetPath: dir, kind: 'directory' as const, followSymlinks: false }];
      await calls.call(
        'environmentSyncOut',
        { ...params, operations: [{ operationId: OPERATION_ID, files }] },
        SyncReply,
        { timeoutMs: DEFAULT_SYNC_TIMEOUT_MS, signal },
      );
    } else {
      const reply = await sandboxShell(move, PACK, 'envrun-sync-out', "packing the sandbox's workspace");
      if (reply.stdout.length > (MAX_EXEC_ARCHIVE_BYTES * 4) / 3 + 4096)
        throw new Error(`the sandbox's workspace is over ${MAX_EXEC_ARCHIVE_BYTES} bytes as a tar archive`);
      // Into the private staging folder only; the safe copy below judges everything in it.
      await tar(
        ['-xf', '-', '-C', dir, '--no-same-owner', '--no-same-permissions'],
        Buffer.from(reply.stdout, 'base64'),
        signal,
      );
    }
    const result: SafeCopyResult = await safeCopyBack(dir, syncBackTo, { signal, timeoutMs: DEFAULT_SYNC_TIMEOUT_MS });
    move.onProgress?.(`synced back into ${syncBackTo}: ${describeCopy(result)}`);
    return syncBackReport(result);
  } catch (err) {
    if (signal?.aborted || workerUnavailable(err)) throw err;
    const error = `sync back into ${syncBackTo} failed: ${(err as Error).message}`;
    move.onProgress?.(error);
    return syncBackReport({ error });
  } finally {
    await removeTree(dir);
  }
}
