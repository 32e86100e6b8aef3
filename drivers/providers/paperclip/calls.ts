// The environment methods of one Paperclip plugin worker, for one of its drivers: every reply parsed with zod
// (an off-contract reply fails naming the plugin, the driver and the method), and the worker's failures
// sorted into the ones a retry may fix (the worker died or is restarting, no reply in time, the plugin's
// own error) and the ones it cannot (the method is missing, the reply is not the protocol).
import type { HostToWorkerMethods, PluginEnvironmentLease } from '@paperclipai/plugin-sdk/protocol';
import { z } from 'zod';
import { describeZodError } from '../../../contracts/index.js';
import { NonRetryableError } from '../../../contracts/errors.js';
import { ProviderReplyError } from '../checked.js';
import type { ProviderLease } from '../contract.js';

/** What the provider needs of a plugin worker (worker.ts's PluginWorker). */
export interface PluginWorkerLike {
  supports(method: string): boolean;
  call<M extends keyof HostToWorkerMethods>(
    method: M,
    params: HostToWorkerMethods[M][0],
    options?: { timeoutMs?: number; signal?: AbortSignal; onOutput?: (stream: string, chunk: string) => void },
  ): Promise<unknown>;
}

export type EnvironmentMethod = Extract<keyof HostToWorkerMethods, `environment${string}`>;

const Metadata = z.record(z.string(), z.unknown());
const IsoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be a date (ISO 8601)');

export const ValidationReply = z.object({
  ok: z.boolean(),
  warnings: z.array(z.string()).optional(),
  errors: z.array(z.string()).optional(),
  normalizedConfig: Metadata.optional(),
});
export const ProbeReply = z.object({
  ok: z.boolean(),
  summary: z.string().optional(),
  diagnostics: z
    .array(
      z.object({
        severity: z.enum(['info', 'warning', 'error']),
        message: z.string(),
        code: z.string().optional(),
        details: Metadata.optional(),
      }),
    )
    .optional(),
  metadata: Metadata.optional(),
});
/** A lease; a null `providerLeaseId` from resume means the resource is gone. */
export const LeaseReply = z.object({
  providerLeaseId: z.string().min(1).max(1000).nullable(),
  metadata: Metadata.optional(),
  expiresAt: IsoDate.nullable().optional(),
});
/** Release and destroy: a termination receipt, or nothing (the plugin confirms nothing). */
export const ReceiptReply = z
  .object({ providerLeaseId: z.string().min(1).max(1000), state: z.enum(['stopped', 'destroyed']) })
  .nullish();
export const RealizeReply = z.object({ cwd: z.string().min(1), metadata: Metadata.optional() });
export const ExecuteReply = z.object({
  exitCode: z.number().int().nullable(),
  signal: z.string().nullish(),
  timedOut: z.boolean(),
  stdout: z.string(),
  stderr: z.string(),
  metadata: Metadata.optional(),
});
export const SyncReply = z.object({
  operations: z.array(
    z.object({
      operationId: z.string(),
      filesTransferred: z.number().int().nonnegative(),
      bytesTransferred: z.number().nonnegative(),
    }),
  ),
});

/** envrun's own keys of a sandbox environment's config: the plugin never sees them (nor `provider`). */
const ENVELOPE = ['provider', 'leasePolicy', 'provisionTimeoutMs', 'maxConcurrentLeases', 'singleFlight'] as const;
/** A sandbox config as envrun's keys (the envelope) and the plugin's own. */
export const split = (config: Record<string, unknown>) => {
  const envelope: Record<string, unknown> = {};
  const plugin: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) ((ENVELOPE as readonly string[]).includes(k) ? envelope : plugin)[k] = v;
  return { envelope, plugin };
};

/** A lease as the plugin's calls carry it. */
export const pluginLease = (lease: ProviderLease): PluginEnvironmentLease => ({
  providerLeaseId: lease.providerLeaseId,
  metadata: lease.metadata,
  expiresAt: lease.expiresAt,
});

/** A plugin failure no retry can fix: the method is missing, the worker would not start, a reply off protocol. */
export class PluginRefusedError extends NonRetryableError {
  override name = 'PluginRefusedError';
  constructor(
    override readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const FINAL_CODES = new Set(['plugin_method_not_implemented', 'plugin_protocol_error', 'plugin_initialize_failed']);

export interface CallOptions {
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  onOutput?: ((stream: string, chunk: string) => void) | undefined;
}

export class PluginCalls {
  /** `plugin "<id>" driver "<key>"`: how errors name this provider. */
  readonly label: string;

  constructor(
    readonly worker: PluginWorkerLike,
    readonly pluginKey: string,
    readonly driverKey: string,
  ) {
    this.label = `plugin "${pluginKey}" driver "${driverKey}"`;
  }

  supports(method: EnvironmentMethod): boolean {
    return this.worker.supports(method);
  }

  /** Calls `method` and parses its reply with `schema`. */
  async call<M extends EnvironmentMethod, T>(
    method: M,
    params: HostToWorkerMethods[M][0],
    schema: z.ZodType<T>,
    options: CallOptions = {},
  ): Promise<T> {
    let raw: unknown;
    try {
      raw = await keepAlive(
        this.worker.call(method, params, {
          ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.onOutput ? { onOutput: options.onOutput } : {}),
        }),
      );
    } catch (err) {
      throw this.sorted(err);
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success)
      throw new ProviderReplyError(
        `${this.label} returned an invalid reply to ${method}: ${describeZodError(parsed.error, 'reply')}`,
      );
    return parsed.data;
  }

  /** A worker failure as envrun's steps take it: retryable unless no retry can fix it. */
  private sorted(err: unknown): Error {
    const code = (err as { code?: unknown } | null)?.code;
    const message = err instanceof Error ? err.message : String(err);
    if (typeof code === 'string' && FINAL_CODES.has(code)) return new PluginRefusedError(code, message);
    return err instanceof Error ? err : new Error(message);
  }
}

/**
 * Holds this process open until `work` settles: the worker's pipes do not (a process that forgets to stop
 * its plugin workers still exits), so a CLI awaiting nothing else would exit in the middle of a call.
 */
export async function keepAlive<T>(work: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 60_000);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}

/** Whether a failure is one of a worker that is down or restarting (the call never reached a live worker). */
export function workerUnavailable(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'plugin_worker_unavailable';
}
