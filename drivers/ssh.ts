// The ssh driver: the run executes on a remote host over OpenSSH (the `ssh2` library). The private key is
// a secret *reference* resolved here, on the worker, at run time: it never enters config, lease metadata,
// the activity log or workflow history. Host keys are checked against `knownHosts` unless told otherwise.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, readFile, realpath } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
// Type only: ssh2 (and its crypto dependencies) loads when an ssh environment first connects (connect()).
import type { Client } from 'ssh2';
import {
  SshDriverConfig,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type ExecResult,
  type DriverRealization,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { NonRetryableError } from './errors.js';
import { gitHardeningArgs, runGit } from './git.js';
import { DEFAULT_PATH, LineSplitter, TailBuffer } from './process.js';
import type { ProviderExecRequest } from './providers/types.js';
import { provision } from './provision.js';
import { reuseKeyOf, providerOf } from '../leases/policy.js';
import type { EnvironmentDriver, StepContext } from './types.js';
import {
  DEFAULT_SYNC_TIMEOUT_MS,
  SyncTooLargeError,
  describeCopy,
  maxWorkspaceBytes,
  removeTree,
  safeCopyBack,
  type SafeCopyResult,
} from './sync/safe-copy.js';

/** How long a sync-back (download, extraction and copy into the local workspace) may take. */
const SYNC_BACK_TIMEOUT_MS = DEFAULT_SYNC_TIMEOUT_MS;
const TAR_ENV = { PATH: DEFAULT_PATH, LC_ALL: 'C' };

async function isGitRoot(dir: string): Promise<boolean> {
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

/** POSIX single-quote quoting: the remote shell sees each argument as one literal word. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export async function resolveSecretRef(ref: string): Promise<string> {
  if (ref.startsWith('env:')) {
    const value = process.env[ref.slice(4)];
    if (!value) throw new NonRetryableError(`privateKeySecretRef ${ref}: the variable is not set on this worker`);
    return value;
  }
  if (ref.startsWith('file:')) {
    return readFile(ref.slice(5), 'utf8').catch((err: Error) => {
      throw new NonRetryableError(`privateKeySecretRef ${ref}: ${err.message}`);
    });
  }
  throw new NonRetryableError(`privateKeySecretRef must be env:NAME or file:/path`);
}

/** Does an OpenSSH known_hosts text list this host key for host:port? */
export function knownHostsAccepts(knownHosts: string, host: string, port: number, key: Buffer): boolean {
  const names = port === 22 ? [host, `[${host}]:22`] : [`[${host}]:${port}`];
  const b64 = key.toString('base64');
  return knownHosts.split('\n').some((line) => {
    const [hosts, , blob] = line.trim().split(/\s+/);
    return Boolean(hosts && blob && blob === b64 && hosts.split(',').some((h) => names.includes(h)));
  });
}

type Config = ReturnType<typeof SshDriverConfig.parse>;

class HostKeyRejected extends NonRetryableError {
  override name = 'HostKeyRejected';
}

async function connect(config: Config): Promise<Client> {
  const privateKey = await resolveSecretRef(config.privateKeySecretRef);
  const where = `${config.username}@${config.host}:${config.port}`;
  const { Client: SshClient } = await import('ssh2');
  return new Promise((resolve, reject) => {
    const client = new SshClient();
    let hostKeyError: Error | null = null;
    client.once('ready', () => resolve(client));
    client.once('error', (err) =>
      reject(hostKeyError ?? new Error(`ssh connection to ${where} failed: ${err.message}`)),
    );
    client.connect({
      host: config.host,
      port: config.port,
      username: config.username,
      privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => {
        if (!config.strictHostKeyChecking) return true;
        if (config.knownHosts && knownHostsAccepts(config.knownHosts, config.host, config.port, key)) return true;
        hostKeyError = new HostKeyRejected(
          `host key of ${config.host}:${config.port} is not in knownHosts (strictHostKeyChecking is on); add the host's key to the environment's knownHosts`,
        );
        return false;
      },
    });
  });
}

interface RemoteExec {
  command: string;
  /** A stream is piped (with backpressure), never read whole. */
  stdin?: Buffer | string | Readable | undefined;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Each complete output line, for heartbeat progress. */
  onLine?: ((line: string) => void) | undefined;
}

function remoteExec(client: Client, options: RemoteExec): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    client.exec(options.command, (err, channel) => {
      if (err) return reject(err);
      const stdout = new TailBuffer();
      const stderr = new TailBuffer();
      const lines = options.onLine ? new LineSplitter(options.onLine) : null;
      let timedOut = false;
      const stop = () => {
        channel.signal('KILL');
        channel.close();
      };
      const timer = setTimeout(() => {
        timedOut = true;
        stop();
      }, options.timeoutMs);
      options.signal?.addEventListener('abort', stop, { once: true });
      channel.on('data', (d: Buffer) => {
        stdout.push(d);
        lines?.push(d);
      });
      channel.stderr.on('data', (d: Buffer) => stderr.push(d));
      channel.on('error', () => undefined); // a write after the remote closed: the exit status says what happened
      channel.on('close', (code: number | null, signal?: string) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', stop);
        if (options.stdin instanceof Readable) {
          options.stdin.unpipe(channel);
          options.stdin.destroy();
        }
        resolve({
          exitCode: timedOut ? null : (code ?? null),
          signal: signal ?? (timedOut ? 'SIGKILL' : null),
          timedOut,
          stdout: stdout.toString(),
          stderr: stderr.toString(),
        });
      });
      if (options.stdin instanceof Readable) {
        options.stdin.on('error', () => channel.close());
        options.stdin.pipe(channel);
      } else {
        channel.end(options.stdin ?? '');
      }
    });
  });
}

/** `cd DIR && exec env -i PATH=… K=V COMMAND ARGS…`, every word quoted: nothing is left to the remote shell. */
export function remoteCommand(cwd: string, env: Record<string, string>, command: string, args: string[]): string {
  const assignments = Object.entries({ PATH: DEFAULT_PATH, ...env }).map(([k, v]) => shellQuote(`${k}=${v}`));
  return `cd -- ${shellQuote(cwd)} && exec env -i ${assignments.join(' ')} ${[command, ...args].map(shellQuote).join(' ')}`;
}

async function withConnection<T>(config: Config, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(config);
  try {
    return await fn(client);
  } finally {
    client.end();
  }
}

async function mustSucceed(client: Client, what: string, command: string): Promise<void> {
  const res = await remoteExec(client, { command, timeoutMs: 10 * 60_000 });
  if (res.exitCode !== 0)
    throw new Error(`${what} failed (exit ${res.exitCode}): ${res.stderr.trim().split('\n')[0] ?? ''}`);
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
async function upload(
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
async function syncBack(
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

function leasePath(lease: EnvironmentLease): string {
  const m = /^ssh:\/\/[^/]+(\/.*)$/.exec(lease.providerLeaseId ?? '');
  if (!m?.[1]) throw new NonRetryableError(`lease ${lease.id} has no ssh lease path`);
  return m[1];
}

export function createSshDriver(): EnvironmentDriver {
  const parse = (environment: Environment): Config => {
    const r = SshDriverConfig.safeParse(environment.config);
    if (!r.success) throw new NonRetryableError(describeZodError(r.error, 'config'));
    return r.data;
  };
  const workspaceOf = (lease: EnvironmentLease) => posix.join(leasePath(lease), 'workspace');

  return {
    driver: 'ssh',
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    validateConfig(config) {
      const r = SshDriverConfig.safeParse(config);
      if (!r.success) throw new NonRetryableError(describeZodError(r.error, 'config'));
      return r.data;
    },
    async probe(environment) {
      const config = parse(environment);
      try {
        const res = await withConnection(config, (c) =>
          remoteExec(c, {
            command: `test -d ${shellQuote(config.remoteWorkspacePath)} || mkdir -p -- ${shellQuote(config.remoteWorkspacePath)}; uname -sm`,
            timeoutMs: 15_000,
          }),
        );
        return {
          ok: res.exitCode === 0,
          diagnostics: [
            `connected to ${config.username}@${config.host}:${config.port}`,
            res.stdout.trim() || res.stderr.trim(),
          ],
        };
      } catch (err) {
        return { ok: false, diagnostics: [(err as Error).message] };
      }
    },
    async acquire(ctx: StepContext, { environment, lease }) {
      const config = parse(environment);
      const name =
        reuseKeyOf(environment, lease, false) ??
        `${lease.heartbeatRunId ?? lease.id}-${createHash('sha256').update(ctx.idempotencyKey).digest('hex').slice(0, 12)}`;
      const path = posix.join(config.remoteWorkspacePath, name);
      await withConnection(config, (c) => mustSucceed(c, 'mkdir of the run folder', `mkdir -p -- ${shellQuote(path)}`));
      return {
        provider: 'ssh',
        providerLeaseId: `ssh://${config.username}@${config.host}:${config.port}${path}`,
        metadata: { remotePath: path },
        expiresAt: null,
      };
    },
    async realize(ctx, input): Promise<DriverRealization> {
      const config = parse(input.environment);
      const remote = workspaceOf(input.lease);
      const local = input.request.workspace.cwd;
      const git = await isGitRoot(local);
      const bootstrap = await withConnection(config, async (c) => {
        const bytes = await upload(c, local, remote, git, ctx.signal);
        ctx.progress?.(`uploaded ${bytes} bytes from ${local} to ${remote}`);
        return provision(
          input.realizationRequest.runtimeOverlay.provisionCommand,
          input.provisionTimeoutMs,
          remote,
          (req) =>
            remoteExec(c, {
              command: remoteCommand(req.cwd ?? remote, req.env, req.command, req.args),
              timeoutMs: req.timeoutMs,
              signal: ctx.signal,
              onLine: ctx.progress,
            }),
        );
      });
      return {
        version: 1,
        transport: 'ssh',
        provider: 'ssh',
        environmentId: input.environment.id,
        leaseId: input.lease.id,
        providerLeaseId: input.lease.providerLeaseId,
        local: {
          path: local,
          strategy: input.request.workspace.strategy,
          branchName: input.request.workspace.branchName,
        },
        remote: { path: remote, host: config.host, port: config.port, username: config.username },
        sync: { strategy: git ? 'ssh_git_import_export' : 'ssh_archive_upload_download' },
        bootstrap,
        rebuild: { remoteWorkspacePath: config.remoteWorkspacePath, localPath: local },
        summary: `SSH workspace realized at ${config.username}@${config.host}:${config.port}:${remote}.`,
      };
    },
    async resolveTarget(_ctx, { environment, lease, record }) {
      const config = parse(environment);
      const remoteCwd = record?.remote.path ?? workspaceOf(lease);
      await withConnection(config, (c) => mustSucceed(c, 'remote workspace check', `test -d ${shellQuote(remoteCwd)}`));
      return {
        kind: 'remote',
        transport: 'ssh',
        environmentId: environment.id,
        leaseId: lease.id,
        remoteCwd,
        spec: {
          host: config.host,
          port: config.port,
          username: config.username,
          remoteWorkspacePath: config.remoteWorkspacePath,
          remoteCwd,
          strictHostKeyChecking: config.strictHostKeyChecking,
          knownHosts: config.knownHosts ?? null,
          privateKeySecretRef: config.privateKeySecretRef,
        },
      };
    },
    async execute(ctx, { environment, lease, record }, request: ProviderExecRequest) {
      const config = parse(environment);
      const cwd = request.cwd ?? record?.remote.path ?? workspaceOf(lease);
      return withConnection(config, (c) =>
        remoteExec(c, {
          command: remoteCommand(cwd, request.env, request.command, request.args),
          stdin: request.stdin,
          timeoutMs: request.timeoutMs,
          signal: ctx.signal,
        }),
      );
    },
    async release(ctx, { environment, lease, keep }) {
      if (!lease.providerLeaseId) return;
      const config = parse(environment);
      const path = leasePath(lease);
      const realization = lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      await withConnection(config, async (c) => {
        // Sync the run's changes back into the local workspace before the remote copy goes.
        if (realization) await syncBack(c, realization, ctx);
        if (!keep) await mustSucceed(c, 'removal of the run folder', `rm -rf -- ${shellQuote(path)}`);
      });
    },
  };
}
