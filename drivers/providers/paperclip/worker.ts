// A Paperclip plugin's worker process: `node <worker>` in the plugin's folder with a minimal environment
// (PATH, LANG, and HOME at a private temporary folder; nothing else of envrun's environment), initialized
// with the manifest and config, restarted with backoff when it dies, stopped with `shutdown`, then SIGTERM,
// then SIGKILL. Its stderr lines and `log` calls go to envrun's logger; the worker→host calls envrun does not
// offer are refused with a JSON-RPC error naming the method, so the plugin fails instead of waiting.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostToWorkerMethods, InitializeParams } from '@paperclipai/plugin-sdk/protocol';
import { z } from 'zod';
import { HostMethods, PluginWorkerError, RpcConnection, abortError, clip, eachLine, type PluginLogger } from './rpc.js';

export { PluginWorkerError, type PluginLogger, type PluginWorkerErrorCode } from './rpc.js';

/** The protocol's PLUGIN_API_VERSION (@paperclipai/shared) this host speaks. */
export const PLUGIN_API_VERSION = 1;
/** The methods every worker answers (the protocol's HOST_TO_WORKER_REQUIRED_METHODS). */
const REQUIRED_METHODS = ['initialize', 'health', 'shutdown'];
/** A worker's reply line may be this long (JSON text); a longer one stops the worker. */
const MAX_MESSAGE_CHARS = 256 * 1024 * 1024;
const STDERR_LINE_CHARS = 2000;
/** A worker that ran this long before it died restarts after the initial delay again. */
const STABLE_MS = 10_000;

export interface PluginWorkerOptions {
  /** The manifest id, for logs and errors. */
  pluginKey: string;
  /** Absolute path of the worker entry, run with this process's node. */
  workerPath: string;
  /** The plugin package's folder. */
  cwd: string;
  /** The manifest, sent in `initialize`. */
  manifest: Record<string, unknown>;
  config?: Record<string, unknown>;
  logger: PluginLogger;
  /** Per call, overridable; default 60 s. */
  callTimeoutMs?: number;
  /** Backoff of restarts after a worker died: doubling from initialDelayMs (500) up to maxDelayMs (30 s). */
  restart?: { initialDelayMs?: number; maxDelayMs?: number };
  /** How long stop() waits after `shutdown`, and again after SIGTERM (default 5 s each). */
  stopGraceMs?: number;
  /** Sent as `instanceInfo.instanceId`; default a UUID derived from the host name. */
  instanceId?: string;
  /**
   * Where the worker's private HOME folders go (`home-<pid of this process>-…`): a start removes those of
   * processes that are gone (killed before they could stop their workers). Default: a fresh temporary folder.
   */
  homeRoot?: string;
}

/** Whether a process with this pid runs on this host. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A new HOME folder under `root` (`home-<pid>-…`); those of processes that are gone are removed first. */
async function ownHome(root: string): Promise<string> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  for (const name of await readdir(root)) {
    const pid = /^home-(\d+)-/.exec(name)?.[1];
    if (pid && Number(pid) !== process.pid && !alive(Number(pid)))
      await rm(join(root, name), { recursive: true, force: true });
  }
  return mkdtemp(join(root, `home-${process.pid}-`));
}

export interface PluginCallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The call's output chunks, as the worker streams them (`execute.log` notifications). */
  onOutput?: (stream: string, chunk: string) => void;
}

const InitializeReply = z.object({ ok: z.boolean(), supportedMethods: z.array(z.string()).optional() });
const HealthReply = z.object({ status: z.enum(['ok', 'degraded', 'error']), message: z.string().optional() });

interface Process {
  child: ChildProcess;
  rpc: RpcConnection;
  exited: Promise<void>;
  startedAt: number;
  stderrTail: string[];
}

export class PluginWorker {
  private current: Process | null = null;
  private live = false;
  private supported = new Set(REQUIRED_METHODS);
  private failures = 0;
  private lastFailure = 'the worker is starting';
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | null = null;
  private readonly waiters = new Set<() => void>();
  private readonly outputs = new Map<string, (stream: string, chunk: string) => void>();
  private readonly label: string;
  private readonly fields: Record<string, unknown>;

  private constructor(
    private readonly options: PluginWorkerOptions,
    private readonly home: string,
  ) {
    this.label = `plugin "${options.pluginKey}"`;
    this.fields = { plugin: options.pluginKey };
  }

  /** Spawns and initializes the worker; throws a PluginWorkerError saying why when it does not start. */
  static async start(options: PluginWorkerOptions): Promise<PluginWorker> {
    const safeKey = options.pluginKey.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40);
    const home = options.homeRoot
      ? await ownHome(options.homeRoot)
      : await mkdtemp(join(tmpdir(), `envrun-plugin-${safeKey}-`));
    const worker = new PluginWorker(options, home);
    try {
      await worker.launch();
    } catch (err) {
      await worker.stop();
      throw err;
    }
    return worker;
  }

  get pid(): number | undefined {
    return this.live ? this.current?.child.pid : undefined;
  }

  /** Whether the worker implements `method`: the required methods and what its `initialize` listed. */
  supports(method: string): boolean {
    return this.supported.has(method);
  }

  /**
   * Calls the worker and resolves with its raw result (check it). While the worker restarts, the call
   * waits for the new one, within its timeout.
   */
  async call<M extends keyof HostToWorkerMethods>(
    method: M,
    params: HostToWorkerMethods[M][0],
    options: PluginCallOptions = {},
  ): Promise<unknown> {
    if (method === 'initialize' || method === 'shutdown')
      throw new Error(`${method} is sent by the plugin host itself`);
    if (!this.supports(method)) {
      throw new PluginWorkerError('plugin_method_not_implemented', `${this.label} does not implement ${method}`);
    }
    const timeoutMs = options.timeoutMs ?? this.options.callTimeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const proc = await this.ready(method, deadline, options.signal);
    let extra: Record<string, unknown> | undefined;
    const invocation = randomUUID();
    if (options.onOutput) {
      const companyId = (params as { companyId?: unknown }).companyId;
      extra = {
        paperclipInvocation: { id: invocation, scope: { companyId: typeof companyId === 'string' ? companyId : '' } },
      };
      this.outputs.set(invocation, options.onOutput);
    }
    try {
      return await proc.rpc.request(method, params, {
        timeoutMs: Math.max(1, deadline - Date.now()),
        callTimeoutMs: timeoutMs,
        signal: options.signal,
        extra,
      });
    } finally {
      this.outputs.delete(invocation);
    }
  }

  /** The worker's own health check; never throws (a dead or silent worker is not ok). */
  async health(): Promise<{ ok: boolean; message?: string }> {
    if (!this.live || this.stopping) return { ok: false, message: `${this.label}: ${this.lastFailure}` };
    try {
      const timeoutMs = Math.min(this.options.callTimeoutMs ?? 60_000, 10_000);
      const reply = HealthReply.safeParse(await this.call('health', {}, { timeoutMs }));
      if (!reply.success) return { ok: false, message: `${this.label}: malformed health reply` };
      const message = reply.data.message ?? (reply.data.status === 'ok' ? undefined : reply.data.status);
      return { ok: reply.data.status === 'ok', ...(message === undefined ? {} : { message }) };
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  }

  /** `shutdown`, then SIGTERM, then SIGKILL, each after the grace time; the worker is not restarted. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    clearTimeout(this.restartTimer);
    this.lastFailure = 'the plugin host stopped';
    for (const wake of this.waiters) wake();
    const proc = this.current;
    if (proc) {
      const grace = this.options.stopGraceMs ?? 5_000;
      const exited = (ms: number) =>
        Promise.race([proc.exited.then(() => true), new Promise<false>((r) => setTimeout(r, ms, false).unref())]);
      await proc.rpc.request('shutdown', {}, { timeoutMs: grace }).catch(() => undefined);
      proc.rpc.close('the plugin host stopped');
      if (!(await exited(grace))) {
        this.options.logger.warn({ ...this.fields, pid: proc.child.pid }, 'plugin worker ignored shutdown: SIGTERM');
        proc.child.kill('SIGTERM');
        if (!(await exited(grace))) {
          this.options.logger.warn({ ...this.fields, pid: proc.child.pid }, 'plugin worker ignored SIGTERM: SIGKILL');
          proc.child.kill('SIGKILL');
          await proc.exited;
        }
      }
    }
    await rm(this.home, { recursive: true, force: true });
  }

  /** The running worker, once there is one; fails when `deadline` passes first or the host stops. */
  private async ready(method: string, deadline: number, signal: AbortSignal | undefined): Promise<Process> {
    for (;;) {
      if (this.stopping) throw this.unavailable(method);
      if (this.live && this.current) return this.current;
      if (signal?.aborted) throw abortError(signal, `${this.label}: ${method} was cancelled`);
      const left = deadline - Date.now();
      if (left <= 0) throw this.unavailable(method);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', wake);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        signal?.addEventListener('abort', wake, { once: true });
        this.waiters.add(wake);
      });
    }
  }

  private unavailable(method: string): PluginWorkerError {
    return new PluginWorkerError('plugin_worker_unavailable', `${this.label}: ${method} failed: ${this.lastFailure}`);
  }

  /** Spawns a worker and initializes it; on failure the process is gone and the error says why. */
  private async launch(): Promise<void> {
    const { options } = this;
    const child = spawn(process.execPath, [options.workerPath], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: this.home, LANG: process.env.LANG ?? 'C.UTF-8' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group: a terminal's Ctrl-C reaches envrun, which stops it in order
    });
    child.unref(); // a process that forgets stop() still exits; the worker then sees its stdin close and exits
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void }).unref?.();
    let exitReason = 'the worker did not start';
    let broken = false;
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        if (!broken)
          exitReason = `the worker (pid ${child.pid}) exited with ${signal ? `signal ${signal}` : `code ${code}`}`;
        resolve();
      });
      child.once('error', (err) => {
        exitReason = `the worker could not be started: ${err.message}`;
        if (child.pid === undefined) resolve();
      });
    });
    const stderrTail: string[] = [];
    const host = new HostMethods({
      logger: options.logger,
      fields: { ...this.fields, pid: child.pid },
      config: options.config ?? {},
      outputs: this.outputs,
    });
    const rpc = new RpcConnection({
      input: child.stdout!,
      output: child.stdin!,
      label: this.label,
      logger: options.logger,
      logFields: { ...this.fields, pid: child.pid },
      maxLineLength: MAX_MESSAGE_CHARS,
      onRequest: (m) => host.request(m),
      onNotification: (m) => host.notification(m),
      onBroken: (reason) => {
        options.logger.error(
          { ...this.fields, pid: child.pid },
          `plugin worker broke the protocol (${reason}): killed`,
        );
        broken = true;
        exitReason = `the worker broke the protocol: ${reason}`;
        rpc.close(exitReason);
        child.kill('SIGKILL');
      },
    });
    eachLine(child.stderr!, STDERR_LINE_CHARS, (line, cut) => {
      const text = cut ? `${line}…` : line;
      stderrTail.push(clip(text, 300));
      if (stderrTail.length > 5) stderrTail.shift();
      options.logger.warn({ ...this.fields, pid: child.pid, stream: 'stderr' }, text);
    });
    const proc: Process = { child, rpc, exited, startedAt: Date.now(), stderrTail };
    this.current = proc;
    void exited.then(() => this.exited(proc, exitReason));

    const params = {
      manifest: options.manifest as unknown as InitializeParams['manifest'],
      config: options.config ?? {},
      instanceInfo: { instanceId: options.instanceId ?? defaultInstanceId(), hostVersion: hostVersion() },
      apiVersion: PLUGIN_API_VERSION,
    } satisfies InitializeParams;
    try {
      const timeoutMs = options.callTimeoutMs ?? 60_000;
      const reply = InitializeReply.safeParse(await rpc.request('initialize', params, { timeoutMs }));
      if (!reply.success) throw new Error(`malformed initialize reply: ${reply.error.issues[0]?.message}`);
      if (!reply.data.ok) throw new Error('initialize answered ok: false');
      this.supported = new Set([...REQUIRED_METHODS, ...(reply.data.supportedMethods ?? [])]);
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      const stderr = stderrTail.length ? `; its stderr ended with: ${stderrTail.join(' | ')}` : '';
      const reason =
        err instanceof PluginWorkerError && err.code === 'plugin_worker_unavailable'
          ? exitReason
          : (err as Error).message.replace(`${this.label}: `, '');
      throw new PluginWorkerError(
        'plugin_initialize_failed',
        `${this.label} (${options.workerPath}) did not start: ${reason}${stderr}`,
      );
    }
    if (this.stopping) return;
    this.live = true;
    options.logger.info({ ...this.fields, pid: child.pid }, 'plugin worker started');
    for (const wake of this.waiters) wake();
  }

  /** A worker process ended: fail its calls and, unless stopping, start another after the backoff. */
  private exited(proc: Process, reason: string): void {
    proc.rpc.close(reason);
    if (this.current !== proc) return;
    const wasLive = this.live;
    this.live = false;
    if (this.stopping || !wasLive) return; // stop() waits for it; a failed launch is retried by its caller
    this.options.logger.warn({ ...this.fields, pid: proc.child.pid }, `plugin worker died: ${reason}`);
    this.lastFailure = `${reason}; it is restarting`;
    if (Date.now() - proc.startedAt >= STABLE_MS) this.failures = 0;
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (this.stopping) return;
    const initial = this.options.restart?.initialDelayMs ?? 500;
    const max = this.options.restart?.maxDelayMs ?? 30_000;
    const delayMs = Math.min(max, initial * 2 ** Math.min(this.failures, 30));
    this.failures++;
    this.options.logger.info({ ...this.fields, delayMs, attempt: this.failures }, 'plugin worker restarting');
    this.restartTimer = setTimeout(() => {
      this.launch().catch((err: Error) => {
        if (this.stopping) return;
        this.lastFailure = `${err.message}; it is restarting`;
        this.options.logger.error({ ...this.fields, error: err }, 'plugin worker restart failed');
        this.scheduleRestart();
      });
    }, delayMs).unref();
  }
}

let cachedVersion: string | undefined;

/** envrun's version, from its package.json (above this file, in the sources and in dist/). */
function hostVersion(): string {
  if (cachedVersion) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6 && !cachedVersion; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'envrun' && typeof pkg.version === 'string') cachedVersion = pkg.version;
    } catch {
      // not here: one folder up
    }
  }
  return (cachedVersion ??= '0.0.0');
}

/** A stable UUID for this host (the same name gives the same id). */
function defaultInstanceId(): string {
  const h = createHash('sha256').update(`envrun:${hostname()}`).digest('hex');
  const variant = ((parseInt(h[16]!, 16) & 3) | 8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
