// The bubblewrap provider: a real local sandbox. Each lease is a folder; each command runs under `bwrap`
// in new user, pid, mount, ipc, uts and cgroup namespaces (and its own network namespace unless the
// environment is allowed the host's; with `allowlist`, only the worker's egress proxy is reachable, through
// its unix socket: drivers/egress/), as an unprivileged uid with no capabilities, no way to make user
// namespaces, a seccomp filter, and prlimit's process, memory, file-size and CPU limits. The workspace is
// bind-mounted read-write at /workspace, the system folders read-only, /tmp is a sized tmpfs, and nothing
// else of the host is visible but the environment's read-only `mounts`. When the worker is root, bwrap
// itself runs as an unprivileged host uid (ENVRUN_SANDBOX_UID, default 65534) that owns the lease's
// workspace: the sandbox holds no host privilege even if it left its namespaces. SECURITY.md says what this isolates and what it does not.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lchown, mkdir, realpath, stat } from 'node:fs/promises';
import { existsSync, lstatSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { NonRetryableError } from '../../../contracts/errors.js';
import { EgressConfig } from '../../../contracts/egress.js';
import type { EgressBroker } from '../../egress/broker.js';
import {
  NetworkSetting,
  SANDBOX_CWD,
  SandboxMounts,
  SANDBOX_ID,
  SandboxFds,
  SandboxLimits,
  describeConfigError,
  parseBwrapFeatures,
  sandboxArgs,
  sandboxEtcFiles,
  type BwrapFeatures,
  type NetworkMode,
  type SandboxEgress,
  type SandboxMount,
} from './args.js';
import { DEFAULT_SYNC_TIMEOUT_MS, describeCopy, safeCopyBack, syncBackReport } from '../../sync/safe-copy.js';
import { copyInIncremental, forgetBaseline } from '../../sync/incremental.js';
import { removeTree } from '../../sync/safe-remove.js';
import { createProcessTracker } from './processes.js';
import { runSandbox } from './run.js';
import { sandboxSeccompFilter } from './seccomp.js';
import type { ProbeDiagnostic, SandboxProvider } from '../contract.js';
import { readSetting } from '../../../config/settings.js';

const BubblewrapConfig = z
  .object({
    provider: z.literal('bubblewrap'),
    reuseLease: z.boolean().default(false),
    timeoutMs: z.number().int().positive().optional(),
    /**
     * 'none' (default), 'outbound' (internet, not the host's loopback), 'allowlist' (only `egress`'s rules,
     * through the worker's egress proxy) or 'host'; true = 'outbound'.
     */
    network: NetworkSetting,
    /** With `allowlist`: what each phase may reach, and headers injected (contracts/egress.ts). */
    egress: EgressConfig.optional(),
    /** Per-command resource limits (args.ts has the defaults). */
    limits: SandboxLimits,
    /** Keep the sandbox's changes out of the local workspace at release. */
    discardChanges: z.boolean().default(false),
    /** Host folders or files bound read-only: `[{source, target}]`, sources inside the workspace roots. */
    mounts: SandboxMounts,
  })
  .passthrough()
  .superRefine((config, ctx) => {
    if (config.egress !== undefined && config.network !== 'allowlist')
      ctx.addIssue({ code: 'custom', path: ['egress'], message: 'applies only with network "allowlist"' });
  });
type BubblewrapConfig = z.infer<typeof BubblewrapConfig>;

export interface BubblewrapProviderOptions {
  rootDir: string;
  bwrapPath?: string | null;
  /** May environments use `network: 'host'`? Default: ENVRUN_ALLOW_HOST_NETWORK=1 on the worker. */
  allowHostNetwork?: boolean;
  /** Host uid/gid bwrap runs as when the worker is root. Default: ENVRUN_SANDBOX_UID/GID, else 65534. */
  sandboxUid?: number;
  sandboxGid?: number;
  slirp4netnsPath?: string | null;
  /** Where each lease's sandboxes are recorded (processes.ts); default: `.<rootDir's name>-processes` beside it. */
  processDir?: string;
  /** Where each lease's upload baseline is kept (sync/incremental.ts); default: `.<rootDir's name>-baselines` beside it. */
  baselineDir?: string;
  /** The worker's egress proxy, for `network: "allowlist"`; without it such environments fail to run. */
  egress?: EgressBroker;
  /** The node binary the in-sandbox relay runs under; default: this process's. */
  nodePath?: string;
}

/** The host's CA bundle, which an injecting sandbox sees with its lease CA appended (a regular file only). */
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

const findFirst = (paths: string[]): string | null => paths.find((p) => existsSync(p)) ?? null;

export function findBwrap(): string | null {
  return findFirst(['/usr/bin/bwrap', '/usr/local/bin/bwrap']);
}
export const findSlirp4netns = () => findFirst(['/usr/bin/slirp4netns', '/usr/local/bin/slirp4netns']);
export const findPrlimit = () => findFirst(['/usr/bin/prlimit', '/bin/prlimit']);

const isRoot = () => process.getuid?.() === 0;

function hostId(explicit: number | undefined, variable: 'ENVRUN_SANDBOX_UID' | 'ENVRUN_SANDBOX_GID'): number {
  const raw = explicit ?? readSetting(variable);
  if (!Number.isInteger(raw) || raw <= 0 || raw >= 2 ** 32 - 1) {
    throw new NonRetryableError(`bubblewrap: ${variable} must be a uid/gid other than 0 (got ${String(raw)})`);
  }
  return raw;
}

/** Can bwrap make its namespaces here (as `runAs` when given)? Null when it can, else the reason in plain words. */
export function bwrapUnavailable(
  bwrap = findBwrap(),
  runAs: { uid: number; gid: number } | null = null,
): string | null {
  if (!bwrap) return 'bwrap is not installed (Debian: apt-get install bubblewrap)';
  const res = spawnSync(bwrap, ['--ro-bind', '/', '/', '--unshare-all', '--die-with-parent', 'true'], {
    encoding: 'utf8',
    timeout: 10_000,
    cwd: '/',
    ...(runAs ?? {}),
  });
  return res.status === 0
    ? null
    : `bwrap cannot create namespaces here: ${(res.stderr || res.error?.message || `exit ${res.status}`).trim()}`;
}

const featureCache = new Map<string, BwrapFeatures>();
function bwrapFeatures(bwrap: string): BwrapFeatures {
  let features = featureCache.get(bwrap);
  if (!features) {
    const res = spawnSync(bwrap, ['--help'], { encoding: 'utf8', timeout: 10_000 });
    features = parseBwrapFeatures(`${res.stdout ?? ''}${res.stderr ?? ''}`);
    featureCache.set(bwrap, features);
  }
  return features;
}

/** The first folder on the way to `path` that `uid`/`gid` cannot pass through, or null. */
function unreachableAncestor(path: string, uid: number, gid: number): string | null {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    try {
      const st = statSync(dir);
      const may = st.uid === uid ? st.mode & 0o100 : st.gid === gid ? st.mode & 0o010 : st.mode & 0o001;
      if (!may) return dir;
    } catch {
      /* not made yet: mkdir makes it passable */
    }
    if (dir === dirname(dir)) return null;
  }
}

/**
 * The mounts' sources as they are now: real paths (what bwrap binds, since it follows links), each still a
 * folder or a file, on a way the sandbox uid (`runAs`) may pass. The roots were checked at acquire.
 */
async function resolveMounts(
  mounts: SandboxMount[],
  runAs: { uid: number; gid: number } | null,
): Promise<SandboxMount[]> {
  return Promise.all(
    mounts.map(async ({ source, target }, i) => {
      const field = `config.mounts[${i}].source`;
      let real: string;
      let st: Awaited<ReturnType<typeof stat>>;
      try {
        real = await realpath(source);
        st = await stat(real);
      } catch (err) {
        throw new NonRetryableError(`bubblewrap: ${field}: ${source} cannot be resolved (${(err as Error).message})`);
      }
      if (!st.isDirectory() && !st.isFile())
        throw new NonRetryableError(`bubblewrap: ${field}: ${source} is not a folder or a file`);
      const blocked = runAs && unreachableAncestor(real, runAs.uid, runAs.gid);
      if (blocked)
        throw new NonRetryableError(
          `bubblewrap: ${field}: the sandbox uid ${runAs.uid} cannot pass through ${blocked} to reach ${real}`,
        );
      return { source: real, target };
    }),
  );
}

const lstatOrNull = (path: string) => {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
};

const readOrNull = (path: string): string | null => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
};

export function createBubblewrapProvider(options: BubblewrapProviderOptions): SandboxProvider<BubblewrapConfig> {
  const root = resolve(options.rootDir);
  const bwrap = options.bwrapPath === undefined ? findBwrap() : options.bwrapPath;
  const slirp4netns = options.slirp4netnsPath === undefined ? findSlirp4netns() : options.slirp4netnsPath;
  const prlimit = findPrlimit();
  const shell = findFirst(['/bin/bash', '/usr/bin/bash']);
  const hostNetworkAllowed = () => options.allowHostNetwork ?? readSetting('ENVRUN_ALLOW_HOST_NETWORK');
  /** Who bwrap runs as on the host: the sandbox uid when we are root, else ourselves. */
  const runAs = () =>
    isRoot()
      ? { uid: hostId(options.sandboxUid, 'ENVRUN_SANDBOX_UID'), gid: hostId(options.sandboxGid, 'ENVRUN_SANDBOX_GID') }
      : null;
  /** The lease's folder name under the root. */
  const leaseName = (id: string) => {
    const m = /^bwrap:\/\/([A-Za-z0-9._-]+)$/.exec(id);
    if (!m?.[1] || m[1] === '.' || m[1] === '..')
      throw new NonRetryableError(`bubblewrap: not a bubblewrap lease id: ${id}`);
    return m[1];
  };
  const leaseDir = (id: string) => join(root, leaseName(id));
  // Root's own folder, beside the leases' (a provider key never starts with a dot), out of every sandbox's reach.
  const processes = createProcessTracker(options.processDir ?? join(dirname(root), `.${basename(root)}-processes`));
  const workspaceOf = (id: string) => join(leaseDir(id), 'workspace');
  // What the last upload into each lease wrote (drivers/sync/incremental.ts), in root's own folder too.
  const baselineDir = options.baselineDir ?? join(dirname(root), `.${basename(root)}-baselines`);
  const baselineOf = (name: string) => join(baselineDir, `${name}.json`);
  /** Uploads into one lease run one after the other (each reads and writes its baseline). */
  const uploading = new Map<string, Promise<unknown>>();
  async function oneUploadAtATime<T>(name: string, upload: () => Promise<T>): Promise<T> {
    const mine = (uploading.get(name) ?? Promise.resolve()).catch(() => undefined).then(upload);
    uploading.set(name, mine);
    try {
      return await mine;
    } finally {
      if (uploading.get(name) === mine) uploading.delete(name);
    }
  }

  /**
   * Why this worker cannot run sandboxes, or null. A pass is kept for a minute: the check spawns bwrap
   * synchronously, which would otherwise stall the worker on every acquire; a failure is checked again.
   */
  let availableUntil = 0;
  function unavailable(): string | null {
    if (Date.now() < availableUntil) return null;
    const reason = checkAvailable();
    if (!reason) availableUntil = Date.now() + 60_000;
    return reason;
  }
  function checkAvailable(): string | null {
    const as = runAs();
    const reason = bwrapUnavailable(bwrap, as);
    if (reason) return reason;
    if (!prlimit) return 'prlimit is not installed (Debian: apt-get install util-linux)';
    if (as) {
      const blocked = unreachableAncestor(join(root, 'x', 'workspace'), as.uid, as.gid);
      if (blocked) {
        return `the sandbox uid ${as.uid} cannot pass through ${blocked} to reach ${root}: put ENVRUN_DATA_DIR under folders others may search (chmod o+x), or set ENVRUN_SANDBOX_UID`;
      }
    }
    return null;
  }

  function refuseHostNetwork(network: NetworkMode): void {
    if (network === 'host' && !hostNetworkAllowed()) {
      throw new NonRetryableError(
        'bubblewrap config: config.network: "host" shares the worker\'s network (and its 127.0.0.1 services) with the sandbox; ' +
          'this worker does not allow it (set ENVRUN_ALLOW_HOST_NETWORK=1 on the worker to allow it), use "outbound" for internet access',
      );
    }
  }

  /** Makes the lease's folder: passable by the sandbox uid, the workspace its own. */
  async function prepareLeaseDir(providerLeaseId: string): Promise<void> {
    const workspace = workspaceOf(providerLeaseId);
    await processes.reopen(leaseName(providerLeaseId));
    await mkdir(workspace, { recursive: true });
    const as = runAs();
    if (!as) return;
    await chmod(root, 0o711);
    await chmod(leaseDir(providerLeaseId), 0o711);
    await lchown(workspace, as.uid, as.gid);
    await chmod(workspace, 0o700);
    const blocked = unreachableAncestor(workspace, as.uid, as.gid); // folders mkdir just made under a tight umask
    if (blocked)
      throw new NonRetryableError(
        `bubblewrap: the sandbox uid ${as.uid} cannot pass through ${blocked} (chmod o+x it)`,
      );
  }

  /** Why this worker cannot run `allowlist` sandboxes, or null. */
  function allowlistUnavailable(): string | null {
    if (!options.egress) return 'network "allowlist" needs the worker\'s egress proxy, which this process does not run';
    const as = runAs();
    const blocked = as && unreachableAncestor(nodePath(), as.uid, as.gid);
    return blocked
      ? `network "allowlist": the sandbox uid ${as.uid} cannot pass through ${blocked} to reach the node binary ${nodePath()} the relay runs under`
      : null;
  }
  let node: string | null = null;
  const nodePath = () => (node ??= realpathSync(options.nodePath ?? process.execPath));

  /** The egress proxy's route for this command's phase, opened (or refreshed) before the command runs. */
  async function openEgress(
    config: BubblewrapConfig,
    ctx: Parameters<SandboxProvider<BubblewrapConfig>['execute']>[1],
    phase: 'provision' | 'run',
  ): Promise<SandboxEgress> {
    const reason = allowlistUnavailable();
    if (reason) throw new NonRetryableError(`bubblewrap: ${reason}`);
    const opened = await options.egress!.open({
      providerLeaseId: ctx.lease.providerLeaseId,
      leaseId: ctx.leaseId,
      companyId: ctx.companyId,
      heartbeatRunId: ctx.heartbeatRunId,
      environmentId: ctx.environmentId,
      phase,
      egress: config.egress ?? EgressConfig.parse({}),
    });
    let systemBundle: SandboxEgress['systemBundle'] = null;
    if (opened.caCertPem !== null) {
      const st = lstatOrNull(SYSTEM_CA_BUNDLE);
      const text = st?.isFile() ? readOrNull(SYSTEM_CA_BUNDLE) : null;
      if (text !== null) systemBundle = { path: SYSTEM_CA_BUNDLE, text };
    }
    return { socketDir: opened.socketDir, nodePath: nodePath(), caCertPem: opened.caCertPem, systemBundle };
  }

  return {
    contractVersion: 2,
    key: 'bubblewrap',
    hostBound: true,
    egressAllowlist: true,
    async validateConfig(config) {
      const r = BubblewrapConfig.safeParse(config);
      if (!r.success) throw new NonRetryableError(`bubblewrap config: ${describeConfigError(r.error)}`);
      return { config: r.data, warnings: [] };
    },
    async probe(config) {
      const reason = unavailable();
      if (reason) return { ok: false, diagnostics: [{ severity: 'error', message: reason }] };
      const features = bwrapFeatures(bwrap!);
      const as = runAs();
      const diagnostics: ProbeDiagnostic[] = [
        { severity: 'info', message: `${bwrap} can create user, pid, mount, ipc, uts and net namespaces` },
        {
          severity: 'info',
          message: `sandboxes under ${root}, run as ${as ? `host uid ${as.uid}` : `the worker's uid ${process.getuid?.() ?? '?'}`}, uid ${SANDBOX_ID} inside, no capabilities`,
        },
      ];
      const warn = (message: string) => diagnostics.push({ severity: 'warning', message });
      if (!features.disableUserns)
        warn(
          'this bwrap has no --disable-userns (bubblewrap < 0.8): nested user namespaces are refused only by the seccomp filter',
        );
      if (!features.tmpfsSize)
        warn('this bwrap has no --size (bubblewrap < 0.9): /tmp and /dev/shm are not size-limited');
      if (!sandboxSeccompFilter()) warn(`no seccomp filter for ${process.arch}: the sandbox runs without one`);
      const refused = (message: string) => ({
        ok: false,
        diagnostics: [...diagnostics, { severity: 'error' as const, message }],
      });
      if (config.network === 'outbound' && !slirp4netns)
        return refused('network "outbound" needs slirp4netns (Debian: apt-get install slirp4netns)');
      if (config.network === 'host' && !hostNetworkAllowed())
        return refused('network "host" is not allowed on this worker (ENVRUN_ALLOW_HOST_NETWORK=1)');
      // A process without the proxy (the admin client) only warns: the worker that runs the sandbox has one.
      if (config.network === 'allowlist' && !options.egress)
        warn('network "allowlist": this process runs no egress proxy (a worker does): checked again at acquire');
      else if (config.network === 'allowlist') {
        const reason = allowlistUnavailable();
        if (reason) return refused(reason);
      }
      return { ok: true, diagnostics };
    },
    async acquireLease(config, ctx) {
      refuseHostNetwork(config.network);
      const reason = unavailable() ?? (config.network === 'allowlist' ? allowlistUnavailable() : null);
      if (reason) throw new NonRetryableError(reason);
      const name =
        ctx.reuseKey ??
        `${ctx.heartbeatRunId}-${createHash('sha256').update(ctx.idempotencyKey).digest('hex').slice(0, 12)}`;
      const providerLeaseId = `bwrap://${name.replace(/[^A-Za-z0-9._-]/g, '_')}`;
      const existed = existsSync(leaseDir(providerLeaseId));
      if (!existed) await forgetBaseline(baselineOf(leaseName(providerLeaseId))); // of a folder removed by other means
      await prepareLeaseDir(providerLeaseId);
      return { providerLeaseId, metadata: { root: leaseDir(providerLeaseId), adopted: existed }, expiresAt: null };
    },
    async resumeLease(_config, ctx) {
      const { providerLeaseId } = ctx.lease;
      return existsSync(leaseDir(providerLeaseId))
        ? { providerLeaseId, metadata: { ...ctx.lease.metadata, resumed: true }, expiresAt: ctx.lease.expiresAt }
        : null;
    },
    async realizeWorkspace(_config, ctx) {
      // The upload: the sandbox's filesystem is on this host, so the workspace is copied straight into
      // the folder bind-mounted at /workspace (no archive, no tar processes). Links stay links and are
      // never written through, even where a reused sandbox left some in the folder. Into a folder uploaded
      // to before (a pooled sandbox, a reused one), only what changed since is written.
      const target = workspaceOf(ctx.lease.providerLeaseId);
      const name = leaseName(ctx.lease.providerLeaseId);
      const { result, removed, incremental } = await oneUploadAtATime(name, async () => {
        const created = await mkdir(baselineDir, { recursive: true, mode: 0o700 });
        if (created) await chmod(baselineDir, 0o700);
        return copyInIncremental(ctx.localPath, target, {
          baseline: baselineOf(name),
          owner: runAs(),
          signal: ctx.signal,
        });
      });
      ctx.onProgress?.(
        incremental
          ? `uploaded what changed in ${ctx.localPath} into the sandbox: ${describeCopy(result)}, ${removed} removed`
          : `uploaded ${ctx.localPath} into the sandbox: ${describeCopy(result)}`,
      );
      return {
        cwd: SANDBOX_CWD,
        metadata: {
          syncStrategy: 'sandbox_archive_upload_download',
          hostPath: target,
          localPath: ctx.localPath,
          upload: incremental ? 'changes' : 'full',
        },
      };
    },
    async execute(config, ctx, request) {
      if (!bwrap) throw new NonRetryableError('bwrap is not installed (Debian: apt-get install bubblewrap)');
      if (!prlimit) throw new NonRetryableError('prlimit is not installed (Debian: apt-get install util-linux)');
      refuseHostNetwork(config.network);
      if (config.network === 'outbound' && !slirp4netns)
        throw new NonRetryableError(
          'bubblewrap: network "outbound" needs slirp4netns (Debian: apt-get install slirp4netns)',
        );
      const workspace = workspaceOf(ctx.lease.providerLeaseId);
      const cwd = request.cwd ?? SANDBOX_CWD;
      if (relative(SANDBOX_CWD, cwd).startsWith('..'))
        throw new NonRetryableError(`bubblewrap: cwd ${cwd} is outside ${SANDBOX_CWD}`);
      const workerIsRoot = isRoot();
      const mounts = await resolveMounts(config.mounts ?? [], runAs());
      const egress = config.network === 'allowlist' ? await openEgress(config, ctx, request.phase ?? 'run') : undefined;
      const fds = new SandboxFds();
      const args = sandboxArgs({
        features: bwrapFeatures(bwrap),
        network: config.network,
        limits: config.limits,
        workspace,
        cwd,
        env: request.env,
        command: request.command,
        args: request.args,
        prlimit,
        etcFiles: sandboxEtcFiles(config.network, {
          resolvConf: readOrNull('/etc/resolv.conf'),
          hosts: readOrNull('/etc/hosts'),
        }),
        seccomp: sandboxSeccompFilter(),
        fds,
        mounts,
        ...(egress ? { egress } : {}),
      });
      // The sandbox is recorded as the lease's before its command starts, and forgotten once it has ended.
      const name = leaseName(ctx.lease.providerLeaseId);
      const recorded: { ended?: () => Promise<void> } = {};
      try {
        return await runSandbox({
          bwrap,
          args,
          fds,
          runAs: runAs(),
          shell,
          slirp4netns:
            config.network === 'outbound' && slirp4netns ? { path: slirp4netns, joinUserns: !workerIsRoot } : null,
          onStart: async (initPid) => {
            recorded.ended = await processes.record(name, ctx.heartbeatRunId, initPid);
          },
          stdin: request.stdin,
          stdinStream: request.stdinStream,
          timeoutMs: request.timeoutMs,
          signal: ctx.signal,
          onLine: ctx.onProgress,
          onOutput: request.onOutput,
          onStarted: request.onStarted,
        });
      } finally {
        await recorded.ended?.();
      }
    },
    async resolveTarget(_config, ctx) {
      if (!existsSync(workspaceOf(ctx.lease.providerLeaseId)))
        throw new Error(`bubblewrap: sandbox ${ctx.lease.providerLeaseId} is gone`);
      return { remoteCwd: SANDBOX_CWD };
    },
    async releaseLease(config, ctx) {
      const { providerLeaseId } = ctx.lease;
      const name = leaseName(providerLeaseId);
      const workspace = workspaceOf(providerLeaseId);
      // The lease's processes end first: nothing of the sandbox runs while its folder is read or deleted.
      // A folder that is kept (reuse, retained) may be in use by other runs' sandboxes: only this run's end.
      await processes.killAll(name, ctx.keep ? { run: ctx.heartbeatRunId } : {});
      let syncBack: Record<string, unknown> | undefined;
      if (ctx.syncBackTo && !config.discardChanges && existsSync(workspace)) {
        // The download trusts nothing the sandbox wrote: no .git, no link followed, no FIFO or device, no
        // owner or setuid bit (drivers/sync/safe-copy.ts); what was skipped is reported, never fatal.
        try {
          const result = await safeCopyBack(workspace, ctx.syncBackTo, {
            signal: ctx.signal,
            timeoutMs: DEFAULT_SYNC_TIMEOUT_MS,
          });
          ctx.onProgress?.(`synced back into ${ctx.syncBackTo}: ${describeCopy(result)}`);
          syncBack = syncBackReport(result);
        } catch (err) {
          if (ctx.signal?.aborted) throw err;
          // Whatever the agent left, it cannot fail its release: a sync-back that fails is reported on the
          // lease, and the lease's folder still goes.
          const error = `sync back into ${ctx.syncBackTo} failed: ${(err as Error).message}`;
          ctx.onProgress?.(error);
          syncBack = syncBackReport({ error });
        }
      }
      if (!ctx.keep) {
        await options.egress?.close(providerLeaseId); // no process of the lease is left to use its routes
        await forgetBaseline(baselineOf(name)); // first: a baseline never outlives its folder
        await removeTree(leaseDir(providerLeaseId)); // never follows a link (drivers/sync/safe-remove.ts)
        await processes.forget(name);
      } else {
        await processes.reopen(name, ctx.heartbeatRunId);
      }
      // killAll returned: none of this run's sandboxes is left (it throws when one would not die).
      return {
        ...(syncBack ? { syncBack } : {}),
        receipt: { providerLeaseId, state: ctx.keep ? 'stopped' : 'destroyed' },
      };
    },
    async destroyLease(_config, ctx) {
      const { providerLeaseId } = ctx.lease;
      const name = leaseName(providerLeaseId);
      await processes.killAll(name);
      await options.egress?.close(providerLeaseId);
      await forgetBaseline(baselineOf(name));
      await removeTree(leaseDir(providerLeaseId));
      await processes.forget(name);
      return { receipt: { providerLeaseId, state: 'destroyed' } };
    },
  };
}
