// The bubblewrap sandbox's shape, as data: its config keys (network mode, resource limits), the files it
// sees under /etc, and the exact `bwrap` and `prlimit` arguments. No I/O here except reading which of
// the host's system folders exist; index.ts runs what this builds (run.ts).
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { z } from 'zod';
import { AbsolutePath } from '../../../contracts/common.js';
import { NonRetryableError } from '../../../contracts/errors.js';
import { EGRESS_PROXY_PORT } from '../../../contracts/egress.js';
import { RELAY_SOURCE, RELAY_WRAPPER, SANDBOX_EGRESS_DIR, SANDBOX_NODE, SANDBOX_RELAY } from '../../egress/relay.js';

export const SANDBOX_CWD = '/workspace';
/** The uid and gid of every sandboxed process, inside its user namespace (never 0: no capabilities). */
export const SANDBOX_ID = 1000;
/** System folders bound read-only (those that exist; merged-/usr links are recreated as links). */
export const READ_ONLY_SYSTEM = [
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib64',
  '/lib32',
  '/libx32',
  '/etc/alternatives',
  '/etc/ld.so.cache',
  '/etc/ssl',
  '/etc/ca-certificates',
];

/**
 * `none`: a network namespace of its own with only loopback. `outbound`: its own namespace with a
 * user-mode stack (slirp4netns) that reaches the internet but not the host's loopback. `allowlist`: its own
 * namespace with only loopback, where a relay on 127.0.0.1:3128 (HTTP_PROXY) leads to the worker's egress
 * proxy, which allows the environment's `egress` rules only. `host`: the worker's own network (its
 * 127.0.0.1 services included), only when the worker sets ENVRUN_ALLOW_HOST_NETWORK=1. The old boolean is
 * still read: true = outbound, false = none.
 */
export type NetworkMode = 'none' | 'outbound' | 'allowlist' | 'host';
export const NetworkSetting = z
  .union([z.boolean(), z.enum(['none', 'outbound', 'allowlist', 'host'])])
  .default('none')
  .transform((v): NetworkMode => (v === true ? 'outbound' : v === false ? 'none' : v));

/**
 * Where a mount may not go: the sandbox's root, its workspace, the folders and files it binds itself
 * (system folders, /etc), and /proc, /dev, /tmp. A target equal to one, inside one or above one is refused.
 */
const RESERVED_TARGETS = [SANDBOX_CWD, ...READ_ONLY_SYSTEM, '/etc', '/proc', '/dev', '/tmp', '/run/envrun'];
/** How many read-only mounts an environment may ask for. */
export const MAX_MOUNTS = 16;

const within = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);

/** Why `target` cannot take a mount, or null. */
export function mountTargetProblem(target: string): string | null {
  if (posix.normalize(target) !== target || (target.endsWith('/') && target !== '/'))
    return 'must be a normalized path (no ".", "//" or trailing "/")';
  if (target === '/') return "must not be / (the sandbox's root)";
  const taken = RESERVED_TARGETS.find((dir) => within(target, dir) || within(dir, target));
  return taken ? `must not be ${taken}, inside it or above it (the sandbox's own)` : null;
}

/**
 * Host files or folders bound read-only into the sandbox (an npm cache for `npm ci --offline`, say): the
 * source is checked against the company's workspace roots when a run acquires its lease (config/tenancy.ts)
 * and bound by its real path, resolved again before each command.
 */
export const SandboxMounts = z
  .array(
    z
      .object({
        /** The host path (a folder or a file). */
        source: AbsolutePath,
        /** Where the sandbox sees it. */
        target: AbsolutePath.superRefine((target, ctx) => {
          const problem = mountTargetProblem(target);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
      })
      .strict(),
  )
  .max(MAX_MOUNTS)
  .superRefine((mounts, ctx) => {
    mounts.forEach(({ target }, i) => {
      const other = mounts.findIndex((m, j) => j < i && (within(target, m.target) || within(m.target, target)));
      if (other >= 0)
        ctx.addIssue({ code: 'custom', path: [i, 'target'], message: `overlaps mounts[${other}].target` });
    });
  })
  .optional();
export type SandboxMount = { source: string; target: string };

/** A config error's fields as they are written (`config.mounts[0].target: …`), one per issue. */
export function describeConfigError(error: z.ZodError, prefix = 'config'): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
      return `${prefix}${path}: ${issue.message}`;
    })
    .join('; ');
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/**
 * Limits applied to every command, with prlimit inside the sandbox (the user namespace makes the process
 * count per command) and bwrap's tmpfs size. Per process, not per sandbox, except `processes`.
 */
export const SandboxLimits = z
  .object({
    /** RLIMIT_NPROC: processes and threads of the command, all together. */
    processes: z.number().int().min(16).max(65_536).default(512),
    /** RLIMIT_AS: each process's virtual address space. */
    addressSpaceBytes: z
      .number()
      .int()
      .min(64 * MiB)
      .max(1024 * GiB)
      .default(8 * GiB),
    /** RLIMIT_FSIZE: the largest file a process may write (SIGXFSZ past it). */
    fileSizeBytes: z
      .number()
      .int()
      .min(MiB)
      .max(1024 * GiB)
      .default(GiB),
    /** RLIMIT_CPU: each process's CPU seconds (SIGKILL past it). */
    cpuSeconds: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600)
      .default(3600),
    /** Size of the tmpfs at /tmp and of the one at /dev/shm (memory, each). */
    tmpBytes: z
      .number()
      .int()
      .min(MiB)
      .max(64 * GiB)
      .default(256 * MiB),
  })
  .strict()
  .prefault({});
export type SandboxLimits = z.infer<typeof SandboxLimits>;

/** The arguments of `prlimit` that put the limits on the command that follows (soft = hard). */
export function prlimitArgs(limits: SandboxLimits): string[] {
  return [
    `--nproc=${limits.processes}`,
    `--as=${limits.addressSpaceBytes}`,
    `--fsize=${limits.fileSizeBytes}`,
    `--cpu=${limits.cpuSeconds}`,
    '--core=0',
  ];
}

/** What this bwrap can do (from `bwrap --help`). */
export interface BwrapFeatures {
  disableUserns: boolean;
  tmpfsSize: boolean;
}

/**
 * Extra file descriptors of the bwrap process, numbered from 3 as they are asked for: `data` ones are
 * written and closed by us (bwrap reads them), `info` is read (bwrap writes the child's pid), `block`
 * holds the command until we write to it.
 */
export type FdSpec = { kind: 'data'; content: Buffer } | { kind: 'info' } | { kind: 'block' };
export class SandboxFds {
  readonly specs: FdSpec[] = [];
  private add(spec: FdSpec): string {
    this.specs.push(spec);
    return String(this.specs.length + 2);
  }
  data(content: string | Buffer): string {
    return this.add({ kind: 'data', content: typeof content === 'string' ? Buffer.from(content) : content });
  }
  info(): string {
    return this.add({ kind: 'info' });
  }
  block(): string {
    return this.add({ kind: 'block' });
  }
  indexOf(kind: 'info' | 'block'): number {
    const i = this.specs.findIndex((s) => s.kind === kind);
    return i < 0 ? -1 : i + 3;
  }
}

/** The files the sandbox sees under /etc besides the read-only system ones. */
export function sandboxEtcFiles(
  network: NetworkMode,
  host: { resolvConf: string | null; hosts: string | null },
): Record<string, string> {
  const files: Record<string, string> = {
    '/etc/passwd': `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nsandbox:x:${SANDBOX_ID}:${SANDBOX_ID}:sandbox:${SANDBOX_CWD}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    '/etc/group': `root:x:0:\nsandbox:x:${SANDBOX_ID}:\nnogroup:x:65534:\n`,
    '/etc/nsswitch.conf':
      'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n',
    '/etc/hosts': '127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  };
  if (network === 'outbound') files['/etc/resolv.conf'] = 'nameserver 10.0.2.3\n'; // slirp4netns's DNS forwarder
  // No resolver: names go to the egress proxy (HTTP_PROXY), which resolves them after its policy check.
  if (network === 'allowlist') files['/etc/resolv.conf'] = '# names are resolved by the egress proxy (HTTP_PROXY)\n';
  if (network === 'host') {
    if (host.resolvConf !== null) files['/etc/resolv.conf'] = host.resolvConf;
    if (host.hosts !== null) files['/etc/hosts'] = host.hosts;
  }
  return files;
}

export interface SandboxArgsInput {
  features: BwrapFeatures;
  network: NetworkMode;
  limits: SandboxLimits;
  /** The lease's workspace folder on the host (bound read-write at /workspace). */
  workspace: string;
  cwd: string;
  env: Record<string, string>;
  command: string;
  args: string[];
  prlimit: string;
  etcFiles: Record<string, string>;
  seccomp: Buffer | null;
  fds: SandboxFds;
  /** The host's system folders; tests may pass their own. */
  readOnly?: string[];
  /** Bound read-only after the workspace: real host paths (index.ts resolves them) and their targets. */
  mounts?: SandboxMount[];
  /** For the `allowlist` network (required there). */
  egress?: SandboxEgress;
}

/** What an `allowlist` sandbox gets of the worker's egress proxy. */
export interface SandboxEgress {
  /** The lease's route folder on the host, holding the proxy's socket `s` (bound at SANDBOX_EGRESS_DIR). */
  socketDir: string;
  /** The node binary the relay runs under (a real host path). */
  nodePath: string;
  /** The lease CA of credential brokering, when the environment injects headers. */
  caCertPem: string | null;
  /** The host's CA bundle (its path and text), which the sandbox sees with the lease CA appended. */
  systemBundle: { path: string; text: string } | null;
}

/** Where the sandbox finds the lease CA, and its CA bundle when the host has none to replace. */
export const SANDBOX_EGRESS_CA = '/run/envrun/egress-ca.pem';
export const SANDBOX_CA_BUNDLE = '/run/envrun/ca-bundle.pem';

/** The environment an `allowlist` sandbox's commands get on top of their own (theirs cannot undo it). */
export function egressEnv(egress: SandboxEgress): Record<string, string> {
  const proxy = `http://127.0.0.1:${EGRESS_PROXY_PORT}`;
  const env: Record<string, string> = { NO_PROXY: '', no_proxy: '' };
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
    env[name] = proxy;
    env[name.toLowerCase()] = proxy;
  }
  if (egress.caCertPem !== null) {
    const bundle = egress.systemBundle?.path ?? SANDBOX_CA_BUNDLE;
    for (const name of ['SSL_CERT_FILE', 'CURL_CA_BUNDLE', 'REQUESTS_CA_BUNDLE', 'GIT_SSL_CAINFO']) env[name] = bundle;
    env.NODE_EXTRA_CA_CERTS = SANDBOX_EGRESS_CA;
  }
  return env;
}

/** The `bwrap` arguments for one command. */
export function sandboxArgs(input: SandboxArgsInput): string[] {
  const { features, fds, limits } = input;
  const a = ['--die-with-parent', '--new-session', '--unshare-user'];
  if (features.disableUserns) a.push('--disable-userns'); // no user namespace inside: no nested privilege
  a.push('--uid', String(SANDBOX_ID), '--gid', String(SANDBOX_ID), '--cap-drop', 'ALL');
  a.push('--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try', '--hostname', 'sandbox');
  if (input.network !== 'host') a.push('--unshare-net');
  for (const dir of input.readOnly ?? READ_ONLY_SYSTEM) {
    let link: string | null = null;
    try {
      if (lstatSync(dir).isSymbolicLink()) link = readlinkSync(dir);
    } catch {
      continue; // absent on this host
    }
    if (link !== null && !link.startsWith('/') && !link.includes('..'))
      a.push('--symlink', link, dir); // /bin -> usr/bin
    else if (existsSync(dir)) a.push('--ro-bind', dir, dir);
  }
  for (const [path, content] of Object.entries(input.etcFiles)) a.push('--ro-bind-data', fds.data(content), path);
  const tmpfs = (path: string) => {
    if (features.tmpfsSize) a.push('--size', String(limits.tmpBytes));
    a.push('--tmpfs', path);
  };
  a.push('--proc', '/proc', '--dev', '/dev');
  tmpfs('/dev/shm');
  a.push('--remount-ro', '/dev'); // not recursive: /dev/shm and /dev/pts stay writable
  tmpfs('/tmp');
  a.push('--bind', input.workspace, SANDBOX_CWD);
  for (const { source, target } of input.mounts ?? []) a.push('--ro-bind', source, target);
  const egress = input.network === 'allowlist' ? input.egress : undefined;
  if (input.network === 'allowlist') {
    if (!egress) throw new NonRetryableError('bubblewrap: network "allowlist" needs the worker\'s egress proxy');
    // The route's folder, not its socket: a restarted proxy's new socket is seen by running sandboxes.
    a.push('--ro-bind', egress.socketDir, SANDBOX_EGRESS_DIR);
    a.push('--ro-bind', egress.nodePath, SANDBOX_NODE);
    a.push('--ro-bind-data', fds.data(RELAY_SOURCE), SANDBOX_RELAY);
    if (egress.caCertPem !== null) {
      a.push('--ro-bind-data', fds.data(egress.caCertPem), SANDBOX_EGRESS_CA);
      const system = egress.systemBundle;
      const bundle = `${system ? system.text.replace(/\n?$/, '\n') : ''}${egress.caCertPem}`;
      a.push('--ro-bind-data', fds.data(bundle), system?.path ?? SANDBOX_CA_BUNDLE);
    }
  }
  a.push('--remount-ro', '/'); // the sandbox's own root (a tmpfs bwrap made) takes no writes
  a.push('--chdir', input.cwd, '--clearenv');
  const env = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: SANDBOX_CWD,
    ...input.env,
    ...(egress ? egressEnv(egress) : {}),
  };
  for (const [k, v] of Object.entries(env)) a.push('--setenv', k, v);
  if (input.seccomp) a.push('--seccomp', fds.data(input.seccomp));
  // bwrap names its child (the pid namespace's init) on the info descriptor, and the command waits on the
  // block descriptor: until the sandbox is recorded as its lease's (and, for `outbound`, its network is up).
  a.push('--info-fd', fds.info(), '--block-fd', fds.block());
  // With `allowlist`, a shell starts the relay and then becomes the command (exec): the command starts only
  // once the relay listens.
  const command = egress ? ['/bin/sh', '-c', RELAY_WRAPPER, 'envrun-egress'] : [];
  a.push('--', input.prlimit, ...prlimitArgs(limits), '--', ...command, input.command, ...input.args);
  return a;
}

/**
 * The bwrap command line for `args` (as sandboxArgs builds them): every option before the first `--` is
 * handed over on a descriptor (`--args FD`, NUL-separated) instead, since any local user reads a process's
 * arguments (/proc/PID/cmdline, of bwrap and of its forked child alike) and the command's environment is
 * among the options (`--setenv`). What stays visible is prlimit with its limits, then the command and its
 * arguments. An option holding a NUL, which would end it early there and start another, is refused.
 */
export function optionsOnFd(args: string[], fds: SandboxFds): string[] {
  const end = args.indexOf('--');
  const options = end < 0 ? args : args.slice(0, end);
  options.forEach((arg, i) => {
    if (!arg.includes('\0')) return;
    const name = options[i - 1] === '--setenv' ? arg : options[i - 2] === '--setenv' ? options[i - 1]! : null;
    throw new NonRetryableError(
      name !== null && !name.includes('\0')
        ? `bubblewrap: the environment variable ${name} holds a NUL byte`
        : 'bubblewrap: a sandbox option holds a NUL byte',
    );
  });
  return ['--args', fds.data(options.map((o) => `${o}\0`).join('')), ...(end < 0 ? [] : args.slice(end))];
}

/** Reads bwrap's options from its help text. */
export function parseBwrapFeatures(help: string): BwrapFeatures {
  return { disableUserns: help.includes('--disable-userns'), tmpfsSize: /--size\b/.test(help) };
}
