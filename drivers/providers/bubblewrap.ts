// The bubblewrap provider: a real local sandbox. Each lease is a folder; commands run under `bwrap` in new
// user/pid/mount/ipc/uts (and, unless allowed, network) namespaces, with the workspace bind-mounted
// read-write at /workspace, the system folders read-only, and nothing else of the host visible.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, rm, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { describeZodError } from '../../contracts/index.js';
import { NonRetryableError } from '../errors.js';
import { runProcess } from '../process.js';
import type { SandboxProvider } from './types.js';

const SANDBOX_CWD = '/workspace';
const READ_ONLY = ['/usr', '/bin', '/sbin', '/lib', '/lib64', '/lib32', '/etc/alternatives', '/etc/ld.so.cache', '/etc/ssl'];

const BubblewrapConfig = z.object({
  provider: z.literal('bubblewrap'),
  reuseLease: z.boolean().default(false),
  timeoutMs: z.number().int().positive().optional(),
  network: z.boolean().default(false),
  /** Keep the sandbox's changes out of the local workspace at release. */
  discardChanges: z.boolean().default(false),
}).passthrough();
type BubblewrapConfig = z.infer<typeof BubblewrapConfig>;

export function findBwrap(): string | null {
  for (const p of ['/usr/bin/bwrap', '/usr/local/bin/bwrap']) if (existsSync(p)) return p;
  return null;
}

/** Can bwrap make its namespaces here? Null when it can, else the reason in plain words. */
export function bwrapUnavailable(bwrap = findBwrap()): string | null {
  if (!bwrap) return 'bwrap is not installed (Debian: apt-get install bubblewrap)';
  const res = spawnSync(bwrap, ['--ro-bind', '/', '/', '--unshare-all', '--die-with-parent', 'true'], { encoding: 'utf8', timeout: 10_000 });
  return res.status === 0 ? null : `bwrap cannot create namespaces here: ${(res.stderr || res.error?.message || `exit ${res.status}`).trim()}`;
}

export function createBubblewrapProvider(options: { rootDir: string; bwrapPath?: string | null }): SandboxProvider<BubblewrapConfig> {
  const root = resolve(options.rootDir);
  const bwrap = options.bwrapPath === undefined ? findBwrap() : options.bwrapPath;
  const leaseDir = (id: string) => {
    const m = /^bwrap:\/\/([A-Za-z0-9._-]+)$/.exec(id);
    if (!m?.[1]) throw new NonRetryableError(`bubblewrap: not a bubblewrap lease id: ${id}`);
    return join(root, m[1]);
  };
  const workspaceOf = (id: string) => join(leaseDir(id), 'workspace');

  return {
    key: 'bubblewrap',
    localTarget: true,
    validateConfig(config) {
      const r = BubblewrapConfig.safeParse(config);
      if (!r.success) throw new NonRetryableError(`bubblewrap config: ${describeZodError(r.error, 'config')}`);
      return r.data;
    },
    async probe() {
      const reason = bwrapUnavailable(bwrap);
      return reason ? { ok: false, diagnostics: [reason] } : { ok: true, diagnostics: [`${bwrap} can create user, pid, mount, ipc, uts and net namespaces`, `sandboxes under ${root}`] };
    },
    async acquireLease(_config, ctx) {
      const reason = bwrapUnavailable(bwrap);
      if (reason) throw new NonRetryableError(reason);
      const name = ctx.reuseKey ?? `${ctx.heartbeatRunId}-${createHash('sha256').update(ctx.idempotencyKey).digest('hex').slice(0, 12)}`;
      const providerLeaseId = `bwrap://${name.replace(/[^A-Za-z0-9._-]/g, '_')}`;
      const existed = existsSync(leaseDir(providerLeaseId));
      await mkdir(workspaceOf(providerLeaseId), { recursive: true });
      return { providerLeaseId, metadata: { root: leaseDir(providerLeaseId), adopted: existed }, expiresAt: null };
    },
    async resumeLease(_config, ctx) {
      return (await stat(leaseDir(ctx.providerLeaseId)).then(() => true, () => false))
        ? { providerLeaseId: ctx.providerLeaseId, metadata: { resumed: true }, expiresAt: null }
        : null;
    },
    async realizeWorkspace(_config, ctx) {
      // The upload: the sandbox's filesystem is on this host, so the workspace is copied straight into
      // the folder bind-mounted at /workspace (no archive and no tar processes: this is the realize path
      // the benchmark measures). Symlinks are copied as links, never followed out of the workspace.
      const target = workspaceOf(ctx.providerLeaseId);
      await cp(ctx.localPath, target, { recursive: true, force: true, verbatimSymlinks: true, preserveTimestamps: true });
      ctx.onProgress?.(`uploaded ${ctx.localPath} into the sandbox`);
      return { cwd: SANDBOX_CWD, metadata: { syncStrategy: 'sandbox_archive_upload_download', hostPath: target, localPath: ctx.localPath } };
    },
    async execute(config, ctx, request) {
      if (!bwrap) throw new NonRetryableError('bwrap is not installed (Debian: apt-get install bubblewrap)');
      const workspace = workspaceOf(ctx.providerLeaseId);
      const cwd = request.cwd ?? SANDBOX_CWD;
      if (relative(SANDBOX_CWD, cwd).startsWith('..')) throw new NonRetryableError(`bubblewrap: cwd ${cwd} is outside ${SANDBOX_CWD}`);
      const args = ['--die-with-parent', '--new-session', '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try'];
      if (!config.network) args.push('--unshare-net');
      for (const dir of READ_ONLY) if (existsSync(dir)) args.push('--ro-bind', dir, dir);
      args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--bind', workspace, SANDBOX_CWD, '--chdir', cwd, '--clearenv');
      for (const [k, v] of Object.entries({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: SANDBOX_CWD, ...request.env })) args.push('--setenv', k, v);
      args.push('--', request.command, ...request.args);
      return runProcess({ command: bwrap, args, cwd: workspace, env: {}, stdin: request.stdin, timeoutMs: request.timeoutMs, signal: ctx.signal, onLine: ctx.onProgress });
    },
    async resolveTarget(_config, ctx) {
      if (!existsSync(workspaceOf(ctx.providerLeaseId))) throw new Error(`bubblewrap: sandbox ${ctx.providerLeaseId} is gone`);
      return { remoteCwd: SANDBOX_CWD };
    },
    async releaseLease(config, ctx) {
      const workspace = workspaceOf(ctx.providerLeaseId);
      if (ctx.syncBackTo && !config.discardChanges && existsSync(workspace)) {
        // The download: the sandbox's changes come back into the local workspace (links stay links).
        await cp(workspace, ctx.syncBackTo, { recursive: true, force: true, verbatimSymlinks: true, preserveTimestamps: true });
      }
      if (!ctx.keep) await rm(leaseDir(ctx.providerLeaseId), { recursive: true, force: true });
    },
    async destroyLease(_config, ctx) {
      await rm(leaseDir(ctx.providerLeaseId), { recursive: true, force: true });
    },
  };
}
