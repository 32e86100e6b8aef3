// A sandbox provider (contract version 2) over one driver of a Paperclip plugin: each call is the plugin's
// `environment*` method with Paperclip's call shape (driverKey, companyId, environmentId, issueId, the
// plugin's part of the config, and the lease as `{providerLeaseId, metadata}`). Not host-bound: the plugin's
// sandbox lives wherever the plugin puts it, and every worker host runs its own plugin workers.
//
// What envrun adds around the plugin:
//  - acquire is idempotent per run step: the lease an acquire made is journaled (journal.ts) and a retry
//    adopts it through `environmentResumeLease` instead of making a second sandbox; a reuse key shares one
//    lease the same way (resumed, else a new one);
//  - a kept lease (reuse, retained) is not handed to `environmentReleaseLease`: the plugin's release ends a
//    sandbox, and a kept one must outlive the run; `destroyLease` ends it later. Only `stop_and_retain` hands
//    it over (the plugin stops it; it stays for a later run);
//  - a release whose receipt says `stopped` is followed by `environmentDestroyLease`: an ended lease leaves
//    nothing behind;
//  - files move as files.ts says, and the realized folder is never the control plane's own workspace.
import type { PluginEnvironmentDriverBaseParams, PluginEnvironmentLease } from '@paperclipai/plugin-sdk/protocol';
import { NonRetryableError } from '../../../contracts/errors.js';
import { within } from '../../../lib/paths.js';
import type {
  LeaseCallContext,
  ProbeResult,
  ProviderCallContext,
  ProviderExecRequest,
  ProviderLease,
  SandboxProvider,
  TerminationReceipt,
  ValidatedConfig,
} from '../contract.js';
import { ProviderReplyError } from '../checked.js';
import {
  ExecuteReply,
  LeaseReply,
  PluginCalls,
  ProbeReply,
  RealizeReply,
  ReceiptReply,
  ValidationReply,
  pluginLease,
  split,
  type PluginWorkerLike,
} from './calls.js';
import { pullWorkspace, pushWorkspace, type FileMove } from './files.js';
import { LeaseJournal, type JournalEntry } from './journal.js';

type Config = Record<string, unknown>;

/** acquire, resume, release, destroy, realize: a cloud sandbox may take minutes to start or stop. */
const LIFECYCLE_TIMEOUT_MS = 5 * 60_000;
/** The plugin's own exec timeout applies; this is the host's margin over it. */
const EXEC_MARGIN_MS = 60_000;
const VALIDATED_CACHE = 200;

export interface PaperclipProviderOptions {
  worker: PluginWorkerLike;
  /** The manifest's id. */
  pluginKey: string;
  /** The `sandbox_provider` environment driver's key: the provider's key. */
  driverKey: string;
  /** This provider's folder in the data dir: its journal and staging folders. */
  stateDir: string;
}

/** Output a plugin's chunks may hold in memory while the journal catches up. */
const JOURNAL_QUEUE_BYTES = 16 * 1024 * 1024;

/**
 * A plugin's `execute.log` chunks, journaled in order: each is UTF-8 encoded (the protocol carries text, so
 * output that was not UTF-8 is already lossy there) and handed on once the previous one is taken. A plugin
 * cannot be paused, so chunks wait here meanwhile, up to JOURNAL_QUEUE_BYTES. A journal that fails or falls
 * that far behind is reported to `onError` once, and no chunk follows. `settled()` is its error, if any,
 * once every chunk has been handed on. A plugin that streams nothing leaves the output to its reply.
 */
function outputJournal(onOutput: NonNullable<ProviderExecRequest['onOutput']>, onError: (err: Error) => void) {
  let error: Error | null = null;
  let queued = 0;
  let chain: Promise<void> = Promise.resolve();
  const fail = (err: unknown) => {
    if (error) return;
    error = err instanceof Error ? err : new Error(String(err));
    onError(error);
  };
  return {
    push(stream: string, chunk: string): void {
      if (error || (stream !== 'stdout' && stream !== 'stderr')) return;
      const bytes = Buffer.from(chunk, 'utf8');
      queued += bytes.length;
      if (queued > JOURNAL_QUEUE_BYTES)
        return fail(new Error(`the plugin's output came faster than it could be journaled (${queued} bytes waiting)`));
      chain = chain
        .then(() => (error ? undefined : onOutput(stream, bytes)))
        .then(
          () => void (queued -= bytes.length),
          (err: unknown) => fail(err),
        );
    },
    async settled(): Promise<Error | null> {
      await chain;
      return error;
    },
  };
}

export function createPaperclipProvider(options: PaperclipProviderOptions): SandboxProvider<Config> {
  const { pluginKey, driverKey } = options;
  const calls = new PluginCalls(options.worker, pluginKey, driverKey);
  const journal = new LeaseJournal(`${options.stateDir}/leases`);
  const stagingRoot = `${options.stateDir}/staging`;
  const validated = new Map<string, ValidatedConfig<Config>>();
  const inflight = new Map<string, Promise<ProviderLease>>();
  const reuseLocks = new Map<string, Promise<unknown>>();
  /** Realized workspace folders of leases, by provider lease id (this process's; the journal has the rest). */
  const realized = new Map<string, string>();
  void journal.prune();

  const base = (config: Config, ctx: { companyId: string; environmentId: string; issueId?: string | null }) =>
    ({
      driverKey,
      companyId: ctx.companyId,
      environmentId: ctx.environmentId,
      issueId: ctx.issueId ?? null,
      config: split(config).plugin,
    }) satisfies PluginEnvironmentDriverBaseParams;

  /** One at a time per key in this process (two runs sharing a reuse key acquire in turn). */
  function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = reuseLocks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    reuseLocks.set(key, tail);
    void tail.then(() => reuseLocks.get(key) === tail && reuseLocks.delete(key));
    return next;
  }

  async function resume(config: Config, ctx: ProviderCallContext, lease: ProviderLease): Promise<ProviderLease | null> {
    const reply = await calls.call(
      'environmentResumeLease',
      { ...base(config, ctx), providerLeaseId: lease.providerLeaseId, leaseMetadata: lease.metadata },
      LeaseReply,
      { timeoutMs: LIFECYCLE_TIMEOUT_MS, signal: ctx.signal },
    );
    if (reply.providerLeaseId === null) return null;
    if (reply.providerLeaseId !== lease.providerLeaseId)
      throw new ProviderReplyError(
        `${calls.label} returned an invalid reply to environmentResumeLease: reply.providerLeaseId: is ${JSON.stringify(reply.providerLeaseId)}, not the lease's ${JSON.stringify(lease.providerLeaseId)}`,
      );
    return {
      providerLeaseId: reply.providerLeaseId,
      metadata: reply.metadata ?? lease.metadata,
      expiresAt: reply.expiresAt === undefined ? lease.expiresAt : reply.expiresAt,
    };
  }

  /** The journaled lease, resumed; null (and the record dropped) when there is none or it is gone. */
  async function adopt(config: Config, ctx: ProviderCallContext, kind: 'acquired' | 'reuse', key: string) {
    const entry = await journal.get(kind, key);
    if (!entry) return null;
    const lease = await resume(config, ctx, { ...entry, metadata: entry.metadata });
    if (!lease) await journal.drop(kind, key);
    return lease;
  }

  async function acquireNew(config: Config, ctx: ProviderCallContext): Promise<ProviderLease> {
    const reply = await calls.call(
      'environmentAcquireLease',
      {
        ...base(config, ctx),
        runId: ctx.heartbeatRunId,
        ...(ctx.agentId ? { agentId: ctx.agentId } : {}),
        ...(ctx.adapterType ? { adapterType: ctx.adapterType } : {}),
        executionWorkspaceId: ctx.executionWorkspaceId,
        requestedExpiresAt: ctx.requestedExpiresAt,
      },
      LeaseReply,
      { timeoutMs: LIFECYCLE_TIMEOUT_MS, signal: ctx.signal },
    );
    if (reply.providerLeaseId === null)
      throw new ProviderReplyError(
        `${calls.label} returned an invalid reply to environmentAcquireLease: reply.providerLeaseId: is null`,
      );
    return {
      providerLeaseId: reply.providerLeaseId,
      metadata: reply.metadata ?? {},
      expiresAt: reply.expiresAt ?? null,
    };
  }

  const entry = (lease: ProviderLease): JournalEntry => ({ ...lease });

  /**
   * Where the lease's workspace was realized: as the lease row stores it, else this process's record, the
   * journal's, else the plugin's answer again.
   */
  async function realizedCwd(
    config: Config,
    ctx: LeaseCallContext & { realizedCwd?: string | null },
    localPath: string,
  ): Promise<string> {
    const id = ctx.lease.providerLeaseId;
    const known = ctx.realizedCwd ?? realized.get(id) ?? (await journal.get('realized', id))?.cwd;
    if (known) return known;
    const reply = await calls.call(
      'environmentRealizeWorkspace',
      { ...base(config, ctx), lease: pluginLease(ctx.lease), workspace: { localPath } },
      RealizeReply,
      { timeoutMs: LIFECYCLE_TIMEOUT_MS, signal: ctx.signal },
    );
    return reply.cwd;
  }

  async function forget(providerLeaseId: string) {
    realized.delete(providerLeaseId);
    await journal.forget(providerLeaseId);
  }

  async function end(
    method: 'environmentReleaseLease' | 'environmentDestroyLease',
    config: Config,
    ctx: LeaseCallContext & { cancelActiveWork: boolean },
  ): Promise<TerminationReceipt | undefined> {
    const receipt = await calls.call(
      method,
      {
        ...base(config, ctx),
        providerLeaseId: ctx.lease.providerLeaseId,
        leaseMetadata: ctx.lease.metadata,
        ...(ctx.cancelActiveWork ? { cancelActiveWork: true } : {}),
      },
      ReceiptReply,
      { timeoutMs: LIFECYCLE_TIMEOUT_MS, signal: ctx.signal },
    );
    if (receipt && receipt.providerLeaseId !== ctx.lease.providerLeaseId)
      throw new ProviderReplyError(
        `${calls.label} returned an invalid reply to ${method}: reply.providerLeaseId: is ${JSON.stringify(receipt.providerLeaseId)}, not the lease's ${JSON.stringify(ctx.lease.providerLeaseId)}`,
      );
    return receipt ?? undefined;
  }

  return {
    contractVersion: 2,
    key: driverKey,
    async validateConfig(config) {
      const cacheKey = JSON.stringify(config);
      const cached = validated.get(cacheKey);
      if (cached) return cached;
      const { envelope, plugin } = split(config);
      const reply = await calls.call('environmentValidateConfig', { driverKey, config: plugin }, ValidationReply);
      if (!reply.ok) {
        const errors = reply.errors?.length ? reply.errors.join('; ') : 'no reason given';
        throw new NonRetryableError(`${calls.label} refused the config: ${errors}`);
      }
      const result = { config: { ...(reply.normalizedConfig ?? plugin), ...envelope }, warnings: reply.warnings ?? [] };
      if (validated.size >= VALIDATED_CACHE) validated.delete(validated.keys().next().value!);
      validated.set(cacheKey, result);
      return result;
    },
    async probe(config, ctx): Promise<ProbeResult> {
      try {
        const reply = await calls.call('environmentProbe', base(config, ctx), ProbeReply);
        return {
          ok: reply.ok,
          ...(reply.summary ? { summary: reply.summary.slice(0, 2000) } : {}),
          diagnostics: (reply.diagnostics ?? []).map((d) => ({
            severity: d.severity,
            message: d.message.slice(0, 10_000),
            ...(d.code ? { code: d.code.slice(0, 200) } : {}),
          })),
        };
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        return {
          ok: false,
          diagnostics: [
            { severity: 'error', message: (err as Error).message, ...(typeof code === 'string' ? { code } : {}) },
          ],
        };
      }
    },
    acquireLease(config, ctx) {
      // A retry of the same step while the first attempt still runs here waits for it.
      const running = inflight.get(ctx.idempotencyKey);
      if (running) return running;
      const work = (async () => {
        const adopted = await adopt(config, ctx, 'acquired', ctx.idempotencyKey);
        if (adopted) return adopted;
        if (!ctx.reuseKey) {
          const made = await acquireNew(config, ctx);
          await journal.put('acquired', ctx.idempotencyKey, entry(made));
          return made;
        }
        const reuseKey = `${ctx.companyId}\n${ctx.reuseKey}\n${JSON.stringify(split(config).plugin)}`;
        return serialized(reuseKey, async () => {
          const lease = (await adopt(config, ctx, 'reuse', reuseKey)) ?? (await acquireNew(config, ctx));
          await journal.put('reuse', reuseKey, entry(lease));
          await journal.put('acquired', ctx.idempotencyKey, entry(lease));
          return lease;
        });
      })();
      inflight.set(ctx.idempotencyKey, work);
      void work.then(
        () => inflight.delete(ctx.idempotencyKey),
        () => inflight.delete(ctx.idempotencyKey),
      );
      return work;
    },
    resumeLease: (config, ctx) => resume(config, ctx, ctx.lease),
    async realizeWorkspace(config, ctx) {
      const params = { ...base(config, ctx), lease: pluginLease(ctx.lease) };
      const reply = await calls.call(
        'environmentRealizeWorkspace',
        { ...params, workspace: { localPath: ctx.localPath } },
        RealizeReply,
        { timeoutMs: LIFECYCLE_TIMEOUT_MS, signal: ctx.signal },
      );
      // Checked before any file moves: a sandbox "at" the control plane's own folder would write into it.
      if (within(reply.cwd, ctx.localPath))
        throw new NonRetryableError(
          `${calls.label} realized the workspace at ${reply.cwd}, the control plane's own workspace folder ${ctx.localPath} (or inside it): refused, nothing was provisioned there`,
        );
      const move: FileMove = {
        calls,
        params,
        cwd: reply.cwd,
        stagingRoot,
        signal: ctx.signal,
        onProgress: ctx.onProgress,
      };
      const via = await pushWorkspace(move, ctx.localPath);
      realized.set(ctx.lease.providerLeaseId, reply.cwd);
      await journal.put('realized', ctx.lease.providerLeaseId, { ...entry(ctx.lease), cwd: reply.cwd });
      return {
        cwd: reply.cwd,
        metadata: {
          ...(reply.metadata ?? {}),
          syncStrategy: via === 'environmentExecute' ? 'sandbox_archive_upload_download' : 'provider_defined',
          filesMovedWith: via,
        },
      };
    },
    async execute(config, ctx, request) {
      // A plugin takes stdin whole (one string in the call); a kill is the call's AbortSignal (onStarted unused).
      if (request.stdinStream)
        throw new NonRetryableError(`the provider ${driverKey} cannot stream stdin: a Paperclip plugin takes it whole`);
      let pending = '';
      const progress = ctx.onProgress;
      // A journal that fails ends the call (the plugin is told to cancel), which then fails with its error.
      const stop = new AbortController();
      const journal = request.onOutput ? outputJournal(request.onOutput, (err) => stop.abort(err)) : null;
      const signal = !journal ? ctx.signal : ctx.signal ? AbortSignal.any([ctx.signal, stop.signal]) : stop.signal;
      const onOutput =
        progress || journal
          ? (stream: string, chunk: string) => {
              journal?.push(stream, chunk);
              if (!progress) return;
              const lines = (pending + chunk).split('\n');
              pending = lines.pop() ?? '';
              for (const line of lines) progress(line);
            }
          : undefined;
      const reply = await calls
        .call(
          'environmentExecute',
          {
            ...base(config, ctx),
            lease: pluginLease(ctx.lease),
            command: request.command,
            args: request.args,
            ...(request.cwd ? { cwd: request.cwd } : {}),
            env: request.env,
            ...(request.stdin !== undefined ? { stdin: request.stdin } : {}),
            timeoutMs: request.timeoutMs,
            ...(request.bypassSession ? { bypassSession: true } : {}),
          },
          ExecuteReply,
          { timeoutMs: request.timeoutMs + EXEC_MARGIN_MS, signal, onOutput },
        )
        .catch(async (err: unknown) => {
          throw (await journal?.settled()) ?? err;
        });
      const journalError = await journal?.settled();
      if (journalError) throw journalError;
      if (pending) ctx.onProgress?.(pending);
      return {
        exitCode: reply.exitCode,
        signal: reply.signal ?? null,
        timedOut: reply.timedOut,
        stdout: reply.stdout,
        stderr: reply.stderr,
      };
    },
    async releaseLease(config, ctx) {
      let syncBack: Record<string, unknown> | undefined;
      if (ctx.syncBackTo) {
        const cwd = await realizedCwd(config, ctx, ctx.syncBackTo);
        const params = { ...base(config, ctx), lease: pluginLease(ctx.lease) };
        syncBack = await pullWorkspace(
          { calls, params, cwd, stagingRoot, signal: ctx.signal, onProgress: ctx.onProgress },
          ctx.syncBackTo,
        );
      }
      if (ctx.keep) {
        if (!ctx.stopKept) return syncBack ? { syncBack } : {};
        // stop_and_retain: the plugin's release stops the sandbox, which stays for a later run.
        const stopped = await end('environmentReleaseLease', config, ctx);
        if (stopped?.state === 'destroyed') await forget(ctx.lease.providerLeaseId);
        return { ...(syncBack ? { syncBack } : {}), ...(stopped ? { receipt: stopped } : {}) };
      }
      let receipt = await end('environmentReleaseLease', config, ctx);
      // Stopped is not ended: a lease that is not kept leaves nothing behind.
      if (receipt?.state === 'stopped' && calls.supports('environmentDestroyLease'))
        receipt = (await end('environmentDestroyLease', config, ctx)) ?? receipt;
      if (!receipt && ctx.cancelActiveWork)
        throw new Error(`${calls.label} did not confirm that the sandbox's work ended (no termination receipt)`);
      await forget(ctx.lease.providerLeaseId);
      return { ...(syncBack ? { syncBack } : {}), ...(receipt ? { receipt } : {}) };
    },
    async destroyLease(config, ctx) {
      const receipt = await end('environmentDestroyLease', config, ctx);
      await forget(ctx.lease.providerLeaseId);
      return receipt ? { receipt } : {};
    },
  };
}
