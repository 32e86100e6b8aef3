// The worker's egress proxy, as an EgressBroker: one proxy process per worker (proxy-main.ts), forked at the
// first route and run as an unprivileged host uid when the worker is root (ENVRUN_EGRESS_UID). Each lease
// phase is a route: a folder with a random 128-bit name under a base folder of ours (0711: searchable, not
// listable), holding the proxy's socket `s` (0666); the sandbox binds the folder, so the socket is
// reachable by nothing that was not told its name. Secrets of `egress.inject` are resolved here, on the
// worker, and sent to the proxy only; never logged, never in an event or an error.
//
// Fail closed: when the proxy process dies, nobody listens on the sockets and every sandbox connection fails;
// the supervisor starts it again (with backoff) and sends it every route again.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  EgressConfig as EgressConfigSchema,
  egressRulesFor,
  normalizeHostName,
  type EgressConfig,
  type EgressPhase,
} from '../../contracts/egress.js';
import { ConfigError, readSetting } from '../../config/settings.js';
import { resolveSecretRef } from '../../lib/secret-ref.js';
import { NonRetryableError } from '../../contracts/errors.js';
import { createAuditAggregator } from './audit.js';
import type { EgressAuditRow, EgressBroker } from './broker.js';
import type { ChildMessage, ParentMessage, ProxyRoute, ProxyEvent } from './proxy-main.js';

/** How long open() waits for a proxy process to be up. */
const START_TIMEOUT_MS = 20_000;
/** How long a proxy process has to answer a route message. */
const ACK_TIMEOUT_MS = 10_000;
const BACKOFF_MS = [100, 250, 500, 1000, 2000, 5000];
/** A proxy process that lived this long starts its next restart from the first backoff step again. */
const STABLE_MS = 30_000;

export interface EgressSupervisorOptions {
  /** Where the socket base folder is made; the OS's temporary folder by default. */
  parentDir?: string;
  /** Host uid (and gid) of the proxy when the worker is root; ENVRUN_EGRESS_UID by default. */
  uid?: number;
  /** Aggregated connections, at most every `auditIntervalMs` and at close/stop. */
  onAudit?: (rows: EgressAuditRow[]) => void | Promise<void>;
  auditIntervalMs?: number;
  /** Distinct (host, port, verdict, reason) keys a route's audit keeps before it sums into host `*`. */
  auditKeysPerRoute?: number;
  log?: (line: string) => void;
  /** The host gid sandboxes run as under a root worker (route folders are theirs to pass); ENVRUN_SANDBOX_GID by default. */
  sandboxGid?: number;
  /** Tests only: a CA the proxy also trusts for inject upstreams (given in code, never by a setting). */
  upstreamCaPem?: string;
  /** The waits before each restart of a proxy process that ended (the last repeats). */
  restartDelaysMs?: number[];
}

export interface EgressSupervisor extends EgressBroker {
  /** Where audit rows go from now on (the worker sets it once its store is open). */
  setAuditSink(sink: (rows: EgressAuditRow[]) => void | Promise<void>): void;
  /** The proxy process's pid, or null while none runs. */
  proxyPid(): number | null;
}

interface RouteState {
  route: ProxyRoute;
  socketDir: string;
  environmentId: string;
}

interface LeaseState {
  routes: Map<EgressPhase, RouteState>;
  ca: { key: string; certPem: string; keyPem: string } | null;
}

const COMPILED = import.meta.url.endsWith('.js');

function tsxLoaderUrl(): string {
  const pkg = createRequire(import.meta.url).resolve('tsx/package.json');
  return pathToFileURL(join(dirname(pkg), 'dist', 'loader.mjs')).href;
}

/**
 * The proxy process's node options: `--use-openssl-ca` makes inject upstreams verified against the host's
 * trust store (OpenSSL's: /etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR) rather than node's bundled roots.
 */
export function proxyExecArgv(): string[] {
  return ['--use-openssl-ca', ...(COMPILED ? [] : ['--import', tsxLoaderUrl()])];
}

/** The first folder on the way to `path` that others cannot pass through, or null. */
function closedAncestor(path: string): string | null {
  for (let dir = path; ; dir = dirname(dir)) {
    try {
      if (!(statSync(dir).mode & 0o001)) return dir;
    } catch {
      return dir;
    }
    if (dir === dirname(dir)) return null;
  }
}

/** A socket base folder's name: the prefix, the worker's pid, a dash, mkdtemp's random suffix. */
const BASE_PREFIX = 'envrun-egress-';
const BASE_NAME = /^envrun-egress-([1-9][0-9]{0,9})-[A-Za-z0-9]{6}$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // there, someone else's
  }
}

/**
 * Removes the socket base folders that workers of this uid left under `parent` when they ended without
 * stop() (a crash): a real folder (never a link), owned by us, named with a pid that no process has.
 */
export async function removeStaleBases(
  parent: string,
  log: (line: string) => void = () => undefined,
): Promise<string[]> {
  const uid = process.getuid?.();
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return removed;
  }
  for (const name of names) {
    const pid = Number(BASE_NAME.exec(name)?.[1] ?? 0);
    if (!pid || pid === process.pid || alive(pid)) continue;
    const path = join(parent, name);
    try {
      const st = await lstat(path);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      await rm(path, { recursive: true, force: true }); // removes links inside, never what they point at
      removed.push(path);
    } catch (err) {
      log(`egress proxy: could not remove ${path} left by worker ${pid}: ${(err as Error).message}`);
    }
  }
  if (removed.length > 0) log(`egress proxy: removed ${removed.length} socket folder(s) left by ended workers`);
  return removed;
}

/** Resolves `ref` for `field`; a secret that would break the header (a line break, NUL) is refused. */
async function secretFor(ref: string, field: string): Promise<string> {
  const value = (await resolveSecretRef(ref, field)).trim();
  if (!value) throw new NonRetryableError(`${field} ${ref}: the secret is empty`);
  if (/[\r\n\0]/.test(value)) throw new NonRetryableError(`${field} ${ref}: the secret holds a line break or NUL`);
  return value;
}

export function createEgressSupervisor(options: EgressSupervisorOptions = {}): EgressSupervisor {
  const log = options.log ?? (() => undefined);
  let auditSink = options.onAudit ?? null;
  const auditInterval = options.auditIntervalMs ?? 1000;
  const root = process.getuid?.() === 0;
  let runAs: { uid: number; gid: number } | null | undefined;
  /** Who the proxy runs as: checked once, at the first route. */
  function proxyIdentity(): { uid: number; gid: number } | null {
    if (runAs !== undefined) return runAs;
    if (!root) return (runAs = null);
    const uid = options.uid ?? readSetting('ENVRUN_EGRESS_UID');
    if (uid === readSetting('ENVRUN_SANDBOX_UID'))
      throw new ConfigError(
        `invalid configuration: ENVRUN_EGRESS_UID (${uid}) must differ from ENVRUN_SANDBOX_UID: the sandboxes must not share the proxy's uid`,
      );
    return (runAs = { uid, gid: uid });
  }

  let base: Promise<string> | null = null;
  /** The socket base folder: made once, 0711, on a way others may pass. */
  function baseDir(): Promise<string> {
    base ??= (async () => {
      const parent = options.parentDir ?? tmpdir();
      const closed = closedAncestor(parent);
      if (closed)
        throw new ConfigError(
          `invalid configuration: the egress proxy's sockets go under ${parent}, but others cannot pass through ${closed} (chmod o+x it)`,
        );
      await removeStaleBases(parent, log);
      const dir = await mkdtemp(join(parent, `${BASE_PREFIX}${process.pid}-`));
      await chmod(dir, 0o711);
      return dir;
    })();
    base.catch(() => (base = null));
    return base;
  }

  // ---- the proxy process ----
  let child: ChildProcess | null = null;
  /** Set once the running process has every route; open() waits for it. */
  let ready = false;
  const waiters = new Set<{ resolve: () => void; reject: (err: Error) => void }>();
  let stopping = false;
  let restarts = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  let nextId = 1;
  const pending = new Map<number, { resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  let stderrTail = '';

  function request(proc: ChildProcess, message: ParentMessage & { id: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!proc.connected) {
        reject(new Error('the egress proxy is not running'));
        return;
      }
      const timer = setTimeout(() => {
        pending.delete(message.id);
        reject(new Error(`the egress proxy did not answer within ${ACK_TIMEOUT_MS} ms`));
      }, ACK_TIMEOUT_MS);
      pending.set(message.id, { resolve, reject, timer });
      proc.send(message);
    });
  }

  function start(): void {
    restartTimer = undefined;
    if (stopping) return;
    const startedAt = Date.now();
    const main = fileURLToPath(new URL(COMPILED ? './proxy-main.js' : './proxy-main.ts', import.meta.url));
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' };
    // The proxy reads only these of the worker's settings; nothing else of its environment (its secrets) goes.
    // SSL_CERT_FILE and SSL_CERT_DIR say where the host's trust store is, if not in OpenSSL's default place.
    for (const name of ['NODE_ENV', 'ENVRUN_EGRESS_TEST_RESOLVE', 'TMPDIR', 'SSL_CERT_FILE', 'SSL_CERT_DIR'])
      if (process.env[name] !== undefined) env[name] = process.env[name];
    let proc: ChildProcess;
    try {
      proc = fork(main, [], {
        execArgv: proxyExecArgv(),
        env,
        cwd: '/',
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        ...(proxyIdentity() ?? {}),
      });
    } catch (err) {
      log(`egress proxy: could not start: ${(err as Error).message}`);
      scheduleRestart(startedAt);
      return;
    }
    child = proc;
    stderrTail = '';
    proc.stderr!.on('data', (d: Buffer) => {
      stderrTail = (stderrTail + d.toString('utf8')).slice(-4096);
    });
    proc.on('error', (err) => log(`egress proxy: ${err.message}`));
    proc.on('message', (raw) => {
      const message = raw as ChildMessage;
      if (message.type === 'hello') {
        const init: ParentMessage = {
          type: 'init',
          ...(options.upstreamCaPem ? { upstreamCaPem: options.upstreamCaPem } : {}),
        };
        proc.send(init);
      } else if (message.type === 'ready') {
        void resend(proc).then(
          () => {
            if (child !== proc) return;
            ready = true;
            for (const w of waiters) w.resolve();
            waiters.clear();
          },
          (err: Error) => {
            log(`egress proxy: the routes could not be set up again (${err.message}); restarting it`);
            proc.kill('SIGKILL');
          },
        );
      } else if (message.type === 'ack') {
        const p = pending.get(message.id);
        if (!p) return;
        pending.delete(message.id);
        clearTimeout(p.timer);
        if (message.error) p.reject(new Error(`the egress proxy refused the route: ${message.error}`));
        else p.resolve();
      } else if (message.type === 'event') {
        record(message.event);
      }
    });
    proc.on('exit', (code, signal) => {
      if (child !== proc) return;
      child = null;
      ready = false;
      for (const [id, p] of pending) {
        clearTimeout(p.timer);
        p.reject(new Error('the egress proxy ended'));
        pending.delete(id);
      }
      if (stopping) return;
      const tail = stderrTail.trim().split('\n').slice(-5).join(' / ');
      log(
        `egress proxy ended (${signal ?? `exit ${code}`})${tail ? `: ${tail}` : ''}; sandboxes have no egress until it is back`,
      );
      scheduleRestart(startedAt);
    });
  }

  function scheduleRestart(startedAt: number): void {
    if (stopping) return;
    if (Date.now() - startedAt > STABLE_MS) restarts = 0;
    const delays = options.restartDelaysMs?.length ? options.restartDelaysMs : BACKOFF_MS;
    const delay = delays[Math.min(restarts, delays.length - 1)]!;
    restarts += 1;
    clearTimeout(restartTimer);
    restartTimer = setTimeout(start, delay);
  }

  /** Every route, to a (re)started proxy process. */
  async function resend(proc: ChildProcess): Promise<void> {
    const all = [...leases.values()].flatMap((l) => [...l.routes.values()]);
    await Promise.all(
      all.map((r) =>
        request(proc, { type: 'listen', id: nextId++, route: r.route, socketPath: join(r.socketDir, 's') }),
      ),
    );
  }

  /** The proxy process, once it runs with every route; one is started if none runs or is due. */
  async function running(): Promise<ChildProcess> {
    if (stopping) throw new Error('the egress proxy is stopped');
    if (!child && !restartTimer) start();
    if (!ready || !child) {
      await new Promise<void>((resolve, reject) => {
        const waiter = {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (err: Error) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`the egress proxy is not running (not up within ${START_TIMEOUT_MS} ms)`));
        }, START_TIMEOUT_MS);
        waiters.add(waiter);
      });
    }
    return child!;
  }

  // ---- routes ----
  const leases = new Map<string, LeaseState>();
  const locks = new Map<string, Promise<unknown>>();
  async function locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const mine = (locks.get(key) ?? Promise.resolve()).catch(() => undefined).then(fn);
    locks.set(key, mine);
    try {
      return await mine;
    } finally {
      if (locks.get(key) === mine) locks.delete(key);
    }
  }

  async function leaseCa(lease: LeaseState, hosts: string[]): Promise<{ certPem: string; keyPem: string } | null> {
    if (hosts.length === 0) return null;
    const key = [...new Set(hosts)].sort().join(',');
    if (lease.ca?.key !== key) {
      const { createLeaseCa } = await import('./ca.js'); // @peculiar/x509 loads when a lease first injects
      lease.ca = { key, ...(await createLeaseCa([...new Set(hosts)])) };
    }
    return { certPem: lease.ca.certPem, keyPem: lease.ca.keyPem };
  }

  /**
   * A route's folder. Under a root worker it is the proxy's (which makes, and remakes, its socket there) with
   * the sandboxes' group, 0710: only the proxy, root and the sandbox uid's group reach the socket, whoever
   * learns its name (a bind mount's source shows in /proc/PID/mountinfo). Else it is the worker's, 0700:
   * its sandboxes run as the worker's uid.
   */
  async function routeDir(): Promise<string> {
    const dir = join(await baseDir(), randomBytes(16).toString('hex'));
    await mkdir(dir, { mode: 0o700 });
    const identity = proxyIdentity();
    if (identity) await chown(dir, identity.uid, options.sandboxGid ?? readSetting('ENVRUN_SANDBOX_GID'));
    await chmod(dir, identity ? 0o710 : 0o700);
    return dir;
  }

  // ---- audit ----
  const audit = createAuditAggregator(options.auditKeysPerRoute);
  let flushTimer: NodeJS.Timeout | undefined;

  function record(event: ProxyEvent): void {
    if (!audit.record(event)) return;
    if (!flushTimer) {
      flushTimer = setTimeout(() => void flush(), auditInterval);
      flushTimer.unref();
    }
  }

  async function flush(): Promise<void> {
    clearTimeout(flushTimer);
    flushTimer = undefined;
    if (audit.pending === 0) return;
    const batch = audit.take();
    if (!auditSink) return;
    try {
      await auditSink(batch);
    } catch (err) {
      log(`egress audit: ${batch.length} rows could not be recorded: ${(err as Error).message}`);
    }
  }

  return {
    setAuditSink(sink) {
      auditSink = sink;
    },
    proxyPid: () => child?.pid ?? null,
    async open(input) {
      const egress: EgressConfig = EgressConfigSchema.parse(input.egress ?? {});
      return locked(input.providerLeaseId, async () => {
        const lease = leases.get(input.providerLeaseId) ?? { routes: new Map(), ca: null };
        const inject = await Promise.all(
          egress.inject.map(async (entry, i) => {
            const secret = await secretFor(entry.secret, `config.egress.inject[${i}].secret`);
            return {
              host: normalizeHostName(entry.host)!,
              port: entry.port,
              header: entry.header.toLowerCase(),
              value: entry.value.replace('{secret}', () => secret),
              secret,
            };
          }),
        );
        const ca = await leaseCa(
          lease,
          inject.map((i) => i.host),
        );
        const existing = lease.routes.get(input.phase);
        const route: ProxyRoute = {
          id: existing?.route.id ?? randomUUID(),
          companyId: input.companyId,
          heartbeatRunId: input.heartbeatRunId,
          leaseId: input.leaseId,
          phase: input.phase,
          rules: egressRulesFor(egress, input.phase),
          inject,
          ca,
        };
        const state: RouteState = {
          route,
          socketDir: existing?.socketDir ?? (await routeDir()),
          environmentId: input.environmentId,
        };
        const { companyId, heartbeatRunId, leaseId, phase } = input;
        audit.route(route.id, { companyId, heartbeatRunId, leaseId, environmentId: input.environmentId, phase });
        lease.routes.set(input.phase, state);
        leases.set(input.providerLeaseId, lease);
        // A listen of a known route is an update; a proxy that restarted meanwhile has it from resend().
        const message = () =>
          ({ type: 'listen', id: nextId++, route, socketPath: join(state.socketDir, 's') }) as const;
        await request(await running(), message()).catch(async (err: Error) => {
          if (err.message !== 'the egress proxy ended') throw err;
          await request(await running(), message());
        });
        return { socketDir: state.socketDir, caCertPem: ca?.certPem ?? null };
      });
    },
    async close(providerLeaseId) {
      await locked(providerLeaseId, async () => {
        const lease = leases.get(providerLeaseId);
        if (!lease) return;
        leases.delete(providerLeaseId);
        for (const state of lease.routes.values()) {
          if (child?.connected)
            await request(child, { type: 'unlisten', id: nextId++, routeId: state.route.id }).catch((err: Error) =>
              log(`egress proxy: route of ${providerLeaseId} not closed cleanly: ${err.message}`),
            );
          await rm(state.socketDir, { recursive: true, force: true });
        }
        await flush();
        for (const state of lease.routes.values()) audit.forget(state.route.id);
      });
    },
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      for (const w of waiters) w.reject(new Error('the egress proxy is stopped'));
      waiters.clear();
      const proc = child;
      if (proc) {
        const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      }
      child = null;
      await flush();
      if (base) await rm(await base.catch(() => ''), { recursive: true, force: true }).catch(() => undefined);
      leases.clear();
    },
  };
}
