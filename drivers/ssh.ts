// The ssh driver: the run executes on a remote host over OpenSSH (the `ssh2` library). The private key is
// a secret *reference* resolved here, on the worker, at run time: it never enters config, lease metadata,
// the activity log or workflow history. Host keys are checked against `knownHosts` unless told otherwise.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, realpath } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Client } from 'ssh2';
import {
  SshDriverConfig, describeZodError, type Environment, type EnvironmentLease, type ExecResult, type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { NonRetryableError } from './errors.js';
import { DEFAULT_PATH } from './process.js';
import type { ProviderExecRequest } from './providers/types.js';
import { provision } from './provision.js';
import { reuseKeyOf } from '../leases/policy.js';
import type { EnvironmentDriver, StepContext } from './types.js';

const execFileAsync = promisify(execFile);

async function isGitRoot(dir: string): Promise<boolean> {
  try {
    const { stdout } = await execFileAsync('git', ['-C', dir, 'rev-parse', '--show-toplevel']);
    return (await realpath(stdout.trim())) === (await realpath(dir));
  } catch {
    return false;
  }
}

/** `.git` plus what git would ship: tracked files and untracked ones that are not ignored. */
async function gitFiles(dir: string): Promise<string[]> {
  const { stdout } = await execFileAsync('git', ['-C', dir, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], { maxBuffer: 256 * 1024 ** 2 });
  return ['.git', ...stdout.split('\0').filter((f) => f && existsSync(join(dir, f)))];
}

/** A tar archive of a folder (or of the listed paths in it), in memory. */
function tarCreate(dir: string, files: string[] | null): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tar = spawn('tar', files ? ['-C', dir, '-cf', '-', '--null', '-T', '-'] : ['-C', dir, '-cf', '-', '.'], { stdio: [files ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let stderr = '';
    tar.stdout!.on('data', (c: Buffer) => chunks.push(c));
    tar.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    tar.on('error', reject);
    tar.on('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`tar of ${dir} failed: ${stderr.trim()}`))));
    if (files && tar.stdin) {
      tar.stdin.on('error', () => undefined); // tar exiting early is reported by its exit code, not a crash
      tar.stdin.end(files.join('\0'));
    }
  });
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
  return new Promise((resolve, reject) => {
    const client = new Client();
    let hostKeyError: Error | null = null;
    client.once('ready', () => resolve(client));
    client.once('error', (err) => reject(hostKeyError ?? new Error(`ssh connection to ${where} failed: ${err.message}`)));
    client.connect({
      host: config.host,
      port: config.port,
      username: config.username,
      privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => {
        if (!config.strictHostKeyChecking) return true;
        if (config.knownHosts && knownHostsAccepts(config.knownHosts, config.host, config.port, key)) return true;
        hostKeyError = new HostKeyRejected(`host key of ${config.host}:${config.port} is not in knownHosts (strictHostKeyChecking is on); add the host's key to the environment's knownHosts`);
        return false;
      },
    });
  });
}

interface RemoteExec {
  command: string;
  stdin?: Buffer | string | undefined;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Each complete output line, for heartbeat progress. */
  onLine?: ((line: string) => void) | undefined;
}

function remoteExec(client: Client, options: RemoteExec): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    client.exec(options.command, (err, channel) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
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
      let partial = '';
      channel.on('data', (d: Buffer) => {
        stdout = (stdout + d.toString()).slice(-1024 * 1024);
        if (options.onLine) {
          const lines = (partial + d.toString()).split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) options.onLine(line);
        }
      });
      channel.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-1024 * 1024)));
      channel.on('close', (code: number | null, signal?: string) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', stop);
        resolve({ exitCode: timedOut ? null : (code ?? null), signal: signal ?? (timedOut ? 'SIGKILL' : null), timedOut, stdout, stderr });
      });
      channel.end(options.stdin ?? '');
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

async function mustSucceed(client: Client, what: string, command: string, stdin?: Buffer): Promise<void> {
  const res = await remoteExec(client, { command, stdin, timeoutMs: 10 * 60_000 });
  if (res.exitCode !== 0) throw new Error(`${what} failed (exit ${res.exitCode}): ${res.stderr.trim().split('\n')[0] ?? ''}`);
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
    providerOf: () => 'ssh',
    validateConfig(config) {
      const r = SshDriverConfig.safeParse(config);
      if (!r.success) throw new NonRetryableError(describeZodError(r.error, 'config'));
      return r.data;
    },
    async probe(environment) {
      const config = parse(environment);
      try {
        const res = await withConnection(config, (c) => remoteExec(c, { command: `test -d ${shellQuote(config.remoteWorkspacePath)} || mkdir -p -- ${shellQuote(config.remoteWorkspacePath)}; uname -sm`, timeoutMs: 15_000 }));
        return { ok: res.exitCode === 0, diagnostics: [`connected to ${config.username}@${config.host}:${config.port}`, res.stdout.trim() || res.stderr.trim()] };
      } catch (err) {
        return { ok: false, diagnostics: [(err as Error).message] };
      }
    },
    async acquire(ctx: StepContext, { environment, lease }) {
      const config = parse(environment);
      const name = reuseKeyOf(environment, lease, false)
        ?? `${lease.heartbeatRunId ?? lease.id}-${createHash('sha256').update(ctx.idempotencyKey).digest('hex').slice(0, 12)}`;
      const path = posix.join(config.remoteWorkspacePath, name);
      await withConnection(config, (c) => mustSucceed(c, 'mkdir of the run folder', `mkdir -p -- ${shellQuote(path)}`));
      return {
        provider: 'ssh',
        providerLeaseId: `ssh://${config.username}@${config.host}:${config.port}${path}`,
        metadata: { remotePath: path },
        expiresAt: null,
      };
    },
    async realize(ctx, input): Promise<WorkspaceRealizationRecord> {
      const config = parse(input.environment);
      const remote = workspaceOf(input.lease);
      const local = input.request.workspace.cwd;
      const git = await isGitRoot(local);
      const bootstrap = await withConnection(config, async (c) => {
        // Archive upload: local tar → ssh → remote tar; no shell on either side interprets a path. A git
        // workspace ships .git and the files git would (tracked, and untracked but not ignored).
        const archive = await tarCreate(local, git ? await gitFiles(local) : null);
        await mustSucceed(c, 'workspace upload', `mkdir -p -- ${shellQuote(remote)} && tar -C ${shellQuote(remote)} -xf -`, archive);
        ctx.progress?.(`uploaded ${archive.length} bytes from ${local} to ${remote}`);
        return provision(input.realizationRequest.runtimeOverlay.provisionCommand, input.provisionTimeoutMs, remote,
          (req) => remoteExec(c, { command: remoteCommand(req.cwd ?? remote, req.env, req.command, req.args), timeoutMs: req.timeoutMs, signal: ctx.signal, onLine: ctx.progress }));
      });
      return {
        version: 1,
        transport: 'ssh',
        provider: 'ssh',
        environmentId: input.environment.id,
        leaseId: input.lease.id,
        providerLeaseId: input.lease.providerLeaseId,
        local: { path: local, strategy: input.request.workspace.strategy, branchName: input.request.workspace.branchName },
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
        kind: 'remote', transport: 'ssh', environmentId: environment.id, leaseId: lease.id, remoteCwd,
        spec: {
          host: config.host, port: config.port, username: config.username, remoteWorkspacePath: config.remoteWorkspacePath,
          remoteCwd, strictHostKeyChecking: config.strictHostKeyChecking, knownHosts: config.knownHosts ?? null,
          privateKeySecretRef: config.privateKeySecretRef,
        },
      };
    },
    async execute(ctx, { environment, lease, record }, request: ProviderExecRequest) {
      const config = parse(environment);
      const cwd = request.cwd ?? record?.remote.path ?? workspaceOf(lease);
      return withConnection(config, (c) => remoteExec(c, {
        command: remoteCommand(cwd, request.env, request.command, request.args), stdin: request.stdin, timeoutMs: request.timeoutMs, signal: ctx.signal,
      }));
    },
    async release(_ctx, { environment, lease, keep }) {
      if (!lease.providerLeaseId) return;
      const config = parse(environment);
      const path = leasePath(lease);
      const realization = lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      await withConnection(config, async (c) => {
        if (realization) {
          // Sync the run's changes back into the local workspace before the remote copy goes.
          const res = await new Promise<ExecResult>((resolve, reject) => {
            const dir = shellQuote(realization.remote.path);
            const exportCmd = realization.sync.strategy === 'ssh_git_import_export'
              ? `cd -- ${dir} && { printf '.git\\0'; git ls-files -z --cached --others --exclude-standard; } | tar -cf - --null -T -`
              : `tar -C ${dir} -cf - .`;
            c.exec(exportCmd, (err, channel) => {
              if (err) return reject(err);
              const untar = spawn('tar', ['-C', realization.local.path, '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
              untar.stdin.on('error', () => undefined); // reported by tar's exit code
              untar.on('error', reject);
              channel.pipe(untar.stdin);
              untar.on('close', (code) => resolve({ exitCode: code, signal: null, timedOut: false, stdout: '', stderr: '' }));
            });
          });
          if (res.exitCode !== 0) throw new Error(`sync back to ${realization.local.path} failed (tar exit ${res.exitCode})`);
        }
        if (!keep) await mustSucceed(c, 'removal of the run folder', `rm -rf -- ${shellQuote(path)}`);
      });
    },
  };
}
