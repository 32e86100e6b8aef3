// Running one bwrap sandbox: as an unprivileged host uid when the worker is root, with exactly the file
// descriptors it is given (the worker's own inherited, non-close-on-exec ones are closed first). The
// command starts only once the caller has recorded the sandbox's init (onStart) and, for the `outbound`
// network, a slirp4netns is attached to its network namespace. Timeouts and aborts end the whole process
// group, as drivers/process.ts does.
//
// A caller's signal (onStarted's kill) goes to the sandbox's own process group: bwrap's init (the pid
// namespace's, which --new-session makes a session and group leader) and the command, unless the command
// left it. The init has no handler for any signal, so the kernel keeps every one but SIGKILL and SIGSTOP from
// it: the command gets the signal and the sandbox ends when the command does. SIGKILL ends the whole sandbox
// (bwrap's process group: --die-with-parent takes the init, and the kernel the rest of the namespace). Before
// the sandbox's group exists (or when bwrap names no init) every signal ends the whole sandbox that way: bwrap
// has no handler for them either.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { EnvRunError } from '../../../contracts/errors.js';
import type { ExecResult } from '../../../contracts/index.js';
import {
  DEFAULT_PATH,
  captureOutput,
  groupControl,
  groupTerminator,
  pipeStdin,
  type OutputHandler,
} from '../../process.js';
import type { CommandControl } from '../contract.js';
import { optionsOnFd, type SandboxFds } from './args.js';

const NETWORK_SETUP_TIMEOUT_MS = 15_000;

/**
 * Closes every descriptor above 2 except those listed in $1, then runs the rest of the arguments: bwrap
 * then starts with only the descriptors we hand it, so nothing the worker inherited (an IPC channel, a
 * log pipe) can reach the sandbox, where a directory descriptor would lead out of it.
 */
const CLOSE_FDS_SCRIPT = [
  'keep=" $1 "; shift',
  'for f in /proc/self/fd/*; do n=${f##*/}',
  '  case "$keep" in *" $n "*) continue;; esac',
  '  if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi',
  'done',
  'exec -c "$@"', // and no environment either: bwrap's init (pid 1 inside, readable there) holds none
].join('\n');

export interface SandboxRunOptions {
  bwrap: string;
  /** sandboxArgs(): its options reach bwrap on a descriptor, never on a command line. */
  args: string[];
  fds: SandboxFds;
  /** Host credentials of bwrap (set when the worker is root); null = the worker's own. */
  runAs: { uid: number; gid: number } | null;
  /** A bash to close stray descriptors with; null runs bwrap directly. */
  shell: string | null;
  /** For the `outbound` network. */
  slirp4netns?: {
    path: string;
    /** Join the sandbox's user namespace (a worker that is not root). */ joinUserns: boolean;
  } | null;
  /**
   * Called with the host pid of the sandbox's init (its pid namespace) before the command starts: the
   * command waits until this resolves; a rejection ends the sandbox with that error.
   */
  onStart?: ((initPid: number) => Promise<void>) | undefined;
  stdin?: string | undefined;
  timeoutMs: number;
  killGraceMs?: number;
  signal?: AbortSignal | undefined;
  onLine?: ((line: string, stream: 'stdout' | 'stderr') => void) | undefined;
  /** Each output chunk as the command writes it: none is kept (stdout/stderr are ''). */
  onOutput?: OutputHandler | undefined;
  /** Stdin as a stream, instead of `stdin`. */
  stdinStream?: AsyncIterable<Buffer> | undefined;
  /** Called once the command runs, with what signals it (see the top of this file). */
  onStarted?: ((control: CommandControl) => void) | undefined;
}

/**
 * bwrap's child brings its loopback up, then writes its uid map: once the map is there, slirp4netns (which
 * sets loopback up too) may configure the namespace without racing it ("loopback: Failed RTM_NEWADDR").
 */
async function loopbackReady(pid: number, until: number): Promise<boolean> {
  while (Date.now() < until) {
    try {
      if ((await readFile(`/proc/${pid}/uid_map`, 'utf8')).trim()) return true;
    } catch {
      return false; // the child is gone
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  return false;
}

/** Whether host pid `pid` leads its own process group (bwrap's init, once it has called setsid). */
function leadsGroup(pid: number): boolean | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold anything: count from the last ')'.
    return Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[2]) === pid;
  } catch {
    return null; // gone
  }
}

export class SandboxNetworkError extends EnvRunError {
  override name = 'SandboxNetworkError';
  readonly code = 'sandbox_network_failed';
}

export function runSandbox(options: SandboxRunOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (options.stdinStream && options.stdin !== undefined) {
      reject(new Error('stdin and stdinStream were both given: a command takes one'));
      return;
    }
    let bwrapArgs: string[];
    try {
      bwrapArgs = optionsOnFd(options.args, options.fds); // no option (no env value) on a command line
    } catch (err) {
      reject(err as Error);
      return;
    }
    const extra = options.fds.specs.map(() => 'pipe' as const);
    const keep = extra.map((_, i) => String(i + 3)).join(' ');
    const [command, args] = options.shell
      ? [options.shell, ['-c', CLOSE_FDS_SCRIPT, 'envrun-sandbox', keep, options.bwrap, ...bwrapArgs]]
      : [options.bwrap, bwrapArgs];
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        cwd: '/',
        env: { PATH: DEFAULT_PATH },
        shell: false,
        stdio: ['pipe', 'pipe', 'pipe', ...extra],
        detached: true, // own process group: a timeout kills the whole tree
        ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}),
      });
    } catch (err) {
      reject(err as Error);
      return;
    }
    const { terminate, clear } = groupTerminator(child, options.killGraceMs);
    let timedOut = false;
    let settled = false;
    let slirp: ChildProcess | null = null;
    let setupTimer: NodeJS.Timeout | undefined;
    let setupError: Error | null = null;
    /** Ends the sandbox; the call rejects with `err` (a setup step or a caller's callback that failed). */
    const failSetup = (err: Error) => {
      if (setupError) return;
      setupError = err;
      terminate();
    };
    const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));
    // Output is hostile: only its last MiB per stream is kept, progress lines are bounded (drivers/process.ts);
    // a caller that journals it gets every chunk instead, and nothing is kept.
    const output = captureOutput(
      child,
      options.onLine,
      options.onOutput ? { onOutput: options.onOutput, onError: failSetup } : undefined,
    );
    // The caller's control: bwrap's process group until the sandbox's own group exists, then that group.
    const whole = groupControl(child, () => settled);
    let sandboxGroup: number | null = null;
    const control: CommandControl = {
      kill(signal) {
        if (settled) return;
        if (sandboxGroup === null || signal === 'SIGKILL') return whole.kill(signal);
        try {
          process.kill(-sandboxGroup, signal);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      },
    };
    let announced = false;
    const announce = () => {
      if (!options.onStarted || announced || settled) return;
      announced = true;
      try {
        options.onStarted(control);
      } catch (err) {
        failSetup(asError(err));
      }
    };
    /** The command starts once the block descriptor is written: its caller may signal it from then on. */
    let initPid: number | null = null;
    let gateOpen = false;
    const announceWhenGrouped = () => {
      if (!options.onStarted || !gateOpen || initPid === null) return;
      const pid = initPid;
      const until = Date.now() + 5_000;
      // bwrap's init calls setsid once it has read the block descriptor: announced when that is done.
      const check = () => {
        if (settled) return;
        const leads = leadsGroup(pid);
        if (leads) sandboxGroup = pid;
        if (leads !== false || Date.now() > until) announce();
        else setTimeout(check, 2);
      };
      check();
    };
    const failNetwork = (message: string) =>
      failSetup(new SandboxNetworkError(`bubblewrap: the sandbox network could not be set up: ${message}`));
    const timer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, options.timeoutMs);
    const onAbort = () => terminate();
    options.signal?.addEventListener('abort', onAbort, { once: true });

    // Our ends of the extra descriptors.
    const stream = (fd: number) => child.stdio[fd] as (Readable & Writable) | null | undefined;
    options.fds.specs.forEach((spec, i) => {
      const s = stream(i + 3);
      s?.on('error', () => undefined); // bwrap closes them (or dies) whenever it likes
      if (spec.kind === 'data') s?.end(spec.content);
    });
    const infoFd = options.fds.indexOf('info');
    const blockFd = options.fds.indexOf('block');
    // The command waits on the block descriptor until each gate is open: the sandbox recorded (onStart) and,
    // for `outbound`, its network up.
    const net = options.slirp4netns ?? null;
    let gates = (options.onStart ? 1 : 0) + (net ? 1 : 0);
    const openGate = () => {
      if (--gates > 0) return;
      stream(blockFd)?.end('1');
      gateOpen = true;
      announceWhenGrouped();
    };
    if (blockFd > 0 && gates === 0) stream(blockFd)?.end('1');
    const gated = infoFd > 0 && blockFd > 0 && gates > 0;
    // Ungated, the init is not read from bwrap: a signal ends the whole sandbox.
    if (!gated) child.once('spawn', announce);
    if (gated) {
      if (net)
        setupTimer = setTimeout(
          () => failNetwork(`no answer within ${NETWORK_SETUP_TIMEOUT_MS} ms`),
          NETWORK_SETUP_TIMEOUT_MS,
        );
      let info = '';
      const infoStream = stream(infoFd)!;
      infoStream.on('data', (d: Buffer) => {
        info += d.toString('utf8');
      });
      infoStream.on('end', () => {
        let pid: number;
        try {
          pid = Number((JSON.parse(info) as Record<string, unknown>)['child-pid']);
        } catch {
          clearTimeout(setupTimer);
          if (!settled) failSetup(new Error(`bubblewrap: bwrap gave no child pid (${info.trim() || 'nothing'})`));
          return;
        }
        if (!Number.isInteger(pid) || pid <= 0 || settled) {
          clearTimeout(setupTimer);
          return;
        }
        initPid = pid;
        options.onStart?.(pid).then(openGate, (err: Error) => failSetup(err));
        if (!net) return;
        // The namespaces are held open now, while `pid` is surely bwrap's child in its first user
        // namespace (it moves into a nested one later, and its pid could be reused once it is gone).
        let ns: { user: number; net: number };
        try {
          ns = { user: openSync(`/proc/${pid}/ns/user`, 'r'), net: openSync(`/proc/${pid}/ns/net`, 'r') };
        } catch (err) {
          clearTimeout(setupTimer);
          failNetwork(`the sandbox's namespaces are gone (${(err as Error).message})`);
          return;
        }
        void loopbackReady(pid, Date.now() + NETWORK_SETUP_TIMEOUT_MS).then((ok) => {
          try {
            if (settled) return;
            if (!ok) {
              clearTimeout(setupTimer);
              failNetwork('the sandbox did not get to its network setup');
              return;
            }
            startSlirp(ns);
          } finally {
            closeSync(ns.user);
            closeSync(ns.net);
          }
        });
      });
      const startSlirp = (ns: { user: number; net: number }) => {
        if (!net) return;
        // fd 5 and 6 of slirp4netns are the sandbox's user and network namespaces.
        const slirpArgs = [
          '--configure',
          '--mtu=65520',
          '--disable-host-loopback',
          '--enable-sandbox',
          '--enable-seccomp',
          '--ready-fd=3',
          '--exit-fd=4',
        ];
        if (net.joinUserns) slirpArgs.push('--userns-path=/proc/self/fd/5');
        slirpArgs.push('--netns-type=path', '/proc/self/fd/6', 'tap0');
        let slirpErr = '';
        const [slirpCommand, slirpArgv] = options.shell
          ? [options.shell, ['-c', CLOSE_FDS_SCRIPT, 'envrun-slirp4netns', '3 4 5 6', net.path, ...slirpArgs]]
          : [net.path, slirpArgs];
        const s = spawn(slirpCommand, slirpArgv, {
          cwd: '/',
          env: { PATH: DEFAULT_PATH },
          stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', ns.user, ns.net],
        });
        slirp = s;
        s.on('error', (err) => failNetwork(err.message));
        s.stderr!.on('data', (d: Buffer) => {
          slirpErr = (slirpErr + d.toString('utf8')).slice(-4096);
        });
        const ready = s.stdio[3] as Readable;
        const exitFd = s.stdio[4] as Writable;
        ready.on('error', () => undefined);
        exitFd.on('error', () => undefined);
        ready.once('data', () => {
          clearTimeout(setupTimer);
          openGate(); // the network is up
        });
        s.on('close', (code, sig) => {
          clearTimeout(setupTimer);
          slirp = null;
          if (!settled)
            failNetwork(
              `slirp4netns ended (${sig ?? `exit ${code}`}): ${slirpErr.trim().split('\n').slice(-3).join(' / ')}`,
            );
        });
      };
    }

    const stopSlirp = () => {
      const s = slirp as ChildProcess | null;
      if (!s) return;
      (s.stdio[4] as Writable | null)?.end(); // --exit-fd: it leaves when this closes
      setTimeout(() => s.exitCode === null && s.signalCode === null && s.kill('SIGKILL'), 2000).unref();
    };
    child.stdin!.on('error', () => undefined);
    const feeding = options.stdinStream ? pipeStdin(child.stdin!, options.stdinStream, failSetup) : null;
    if (!feeding) child.stdin!.end(options.stdin ?? '');
    child.on('error', (err) => {
      settled = true;
      clearTimeout(timer);
      clearTimeout(setupTimer);
      clear();
      feeding?.stop();
      options.signal?.removeEventListener('abort', onAbort);
      stopSlirp();
      reject(err);
    });
    child.on('close', (code, signal) => {
      settled = true;
      clearTimeout(timer);
      clearTimeout(setupTimer);
      clear();
      feeding?.stop();
      options.signal?.removeEventListener('abort', onAbort);
      stopSlirp();
      void output.drained().then(() => {
        if (setupError && !timedOut) reject(setupError);
        else
          resolve({
            exitCode: code,
            signal: signal ?? null,
            timedOut,
            stdout: output.stdout(),
            stderr: output.stderr(),
          });
      });
    });
  });
}
