// Newline-delimited JSON-RPC 2.0 over a plugin worker's stdio, as the Paperclip plugin protocol speaks it:
// the host's requests and their replies, the worker's notifications, and the worker's own requests to the
// host. Every line from the worker is checked (zod) before it is used: a line that is not a message is
// logged and dropped; a malformed reply fails the call it answers, never the process.
import type { Readable, Writable } from 'node:stream';
import { z } from 'zod';
import { EnvRunError } from '../../../contracts/errors.js';

/** What the host logs with (envrun's pino logger fits). */
export interface PluginLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export type PluginWorkerErrorCode =
  | 'plugin_worker_unavailable' // the worker died, is restarting, or was stopped: retry later
  | 'plugin_call_timeout' // no reply in time (the call may have taken effect)
  | 'plugin_call_cancelled' // the caller's signal fired
  | 'plugin_error' // the worker answered with a JSON-RPC error (its message and code kept)
  | 'plugin_method_not_implemented' // the worker does not offer the method
  | 'plugin_protocol_error' // the worker's reply is not the protocol
  | 'plugin_initialize_failed'; // the worker would not start

const RETRYABLE: readonly PluginWorkerErrorCode[] = ['plugin_worker_unavailable', 'plugin_call_timeout'];

/** A plugin worker call that failed. `retryable` says whether the same call may succeed later. */
export class PluginWorkerError extends EnvRunError {
  override name = 'PluginWorkerError';
  readonly retryable: boolean;
  constructor(
    readonly code: PluginWorkerErrorCode,
    message: string,
    /** The worker's JSON-RPC error, for `plugin_error`. */
    readonly rpcError?: { code: number; message: string; data?: unknown },
  ) {
    super(message);
    this.retryable = RETRYABLE.includes(code);
  }
}

// Values of the protocol's JSONRPC_ERROR_CODES and PLUGIN_RPC_ERROR_CODES (@paperclipai/plugin-sdk/protocol).
export const RPC_CODES = { METHOD_NOT_FOUND: -32601, METHOD_NOT_IMPLEMENTED: -32004 } as const;

const Id = z.union([z.string(), z.number()]);
const RpcErrorBody = z.object({ code: z.number().int(), message: z.string(), data: z.unknown().optional() });
const Head = { jsonrpc: z.literal('2.0'), paperclipInvocationId: z.string().optional() };
const Request = z.object({ ...Head, id: Id, method: z.string().min(1), params: z.unknown().optional() });
const Notification = z.object({ ...Head, method: z.string().min(1), params: z.unknown().optional() });
const Success = z.object({ ...Head, id: Id, result: z.unknown() });
const Failure = z.object({ ...Head, id: Id.nullable(), error: RpcErrorBody });

export type WorkerRequest = z.infer<typeof Request>;
export type WorkerNotification = z.infer<typeof Notification>;

type Parsed =
  | { kind: 'request'; message: WorkerRequest }
  | { kind: 'notification'; message: WorkerNotification }
  | { kind: 'reply'; id: z.infer<typeof Id> | null; result?: unknown; error?: z.infer<typeof RpcErrorBody> }
  | { kind: 'malformed_reply'; id: z.infer<typeof Id>; reason: string }
  | { kind: 'invalid'; reason: string };

/** One line from the worker, classified and checked. */
export function parseLine(line: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { kind: 'invalid', reason: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { kind: 'invalid', reason: 'not a JSON-RPC message object' };
  }
  const obj = value as Record<string, unknown>;
  const issue = (e: z.ZodError) => e.issues.map((i) => `${i.path.join('.') || 'message'}: ${i.message}`).join('; ');
  if ('method' in obj) {
    if (obj.id === undefined) {
      const parsed = Notification.safeParse(obj);
      return parsed.success
        ? { kind: 'notification', message: parsed.data }
        : { kind: 'invalid', reason: issue(parsed.error) };
    }
    const parsed = Request.safeParse(obj);
    return parsed.success
      ? { kind: 'request', message: parsed.data }
      : { kind: 'invalid', reason: issue(parsed.error) };
  }
  const id = Id.safeParse(obj.id);
  if (!('result' in obj) && !('error' in obj)) {
    const reason = 'neither a request, a notification nor a reply (no method, result or error)';
    return id.success ? { kind: 'malformed_reply', id: id.data, reason } : { kind: 'invalid', reason };
  }
  if ('error' in obj) {
    const parsed = Failure.safeParse(obj);
    if (parsed.success) return { kind: 'reply', id: parsed.data.id, error: parsed.data.error };
    return id.success
      ? { kind: 'malformed_reply', id: id.data, reason: issue(parsed.error) }
      : { kind: 'invalid', reason: issue(parsed.error) };
  }
  const parsed = Success.safeParse(obj);
  if (parsed.success) return { kind: 'reply', id: parsed.data.id, result: parsed.data.result };
  return id.success
    ? { kind: 'malformed_reply', id: id.data, reason: issue(parsed.error) }
    : { kind: 'invalid', reason: issue(parsed.error) };
}

export const clip = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

/**
 * Calls `onLine` for each line of a text stream. A line longer than `maxLength` is passed cut to it, with
 * `cut` set, and the rest of it up to the next newline is dropped (never buffered).
 */
export function eachLine(stream: Readable, maxLength: number, onLine: (line: string, cut: boolean) => void): void {
  let buffer = '';
  let skipping = false;
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      const piece = chunk.slice(start, nl);
      start = nl + 1;
      if (skipping) skipping = false;
      else if (buffer.length + piece.length > maxLength) onLine((buffer + piece).slice(0, maxLength), true);
      else onLine((buffer + piece).replace(/\r$/, ''), false);
      buffer = '';
    }
    if (skipping) return;
    buffer += chunk.slice(start);
    if (buffer.length > maxLength) {
      onLine(buffer.slice(0, maxLength), true);
      buffer = '';
      skipping = true;
    }
  });
  stream.on('end', () => {
    if (buffer && !skipping) onLine(buffer, false);
    buffer = '';
  });
}

export interface RpcConnectionOptions {
  /** The worker's stdout and stdin. */
  input: Readable;
  output: Writable;
  /** Names the worker in errors, e.g. `plugin "acme.sandbox"`. */
  label: string;
  logger: PluginLogger;
  logFields: Record<string, unknown>;
  /** A worker→host request: its result, or a thrown `{code, message}` sent back as the JSON-RPC error. */
  onRequest(message: WorkerRequest): Promise<unknown>;
  onNotification(message: WorkerNotification): void;
  /** The stream cannot go on (a line over `maxLineLength`): the worker should be stopped. */
  onBroken(reason: string): void;
  maxLineLength: number;
}

interface Pending {
  method: string;
  resolve(result: unknown): void;
  reject(err: Error): void;
}

/** One JSON-RPC session with one worker process. */
export class RpcConnection {
  private nextId = 1;
  private readonly pending = new Map<string | number, Pending>();
  private closedBy: string | null = null;

  constructor(private readonly options: RpcConnectionOptions) {
    options.output.on('error', () => {}); // EPIPE once the worker is gone: its exit fails the calls
    eachLine(options.input, options.maxLineLength, (line, cut) => {
      if (cut) options.onBroken(`it wrote a line over ${options.maxLineLength} characters`);
      else if (line.trim()) this.receive(line);
    });
  }

  get closed(): boolean {
    return this.closedBy !== null;
  }

  /**
   * Sends a request and resolves with the worker's result. Rejects with a PluginWorkerError: the worker's
   * error, a malformed reply, no reply within `timeoutMs`, or the connection closing first.
   */
  request(
    method: string,
    params: unknown,
    options: {
      timeoutMs: number;
      /** The timeout the error names, when the call began earlier (waiting for a worker). */
      callTimeoutMs?: number;
      signal?: AbortSignal | undefined;
      extra?: Record<string, unknown> | undefined;
    },
  ): Promise<unknown> {
    if (this.closedBy !== null) return Promise.reject(this.unavailable(method, this.closedBy));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const { signal, timeoutMs } = options;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new PluginWorkerError(
            'plugin_call_timeout',
            `${this.options.label}: ${method} got no reply within ${options.callTimeoutMs ?? timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const onAbort = () => {
        done();
        reject(abortError(signal, `${this.options.label}: ${method} was cancelled`));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        method,
        resolve: (v) => (done(), resolve(v)),
        reject: (e) => (done(), reject(e)),
      });
      this.send({ jsonrpc: '2.0', id, method, params, ...options.extra });
    });
  }

  /** Fails every pending call as `plugin_worker_unavailable` for `reason`; later requests fail at once. */
  close(reason: string): void {
    if (this.closedBy !== null) return;
    this.closedBy = reason;
    for (const call of [...this.pending.values()]) call.reject(this.unavailable(call.method, reason));
    this.options.output.end();
  }

  private unavailable(method: string, reason: string): PluginWorkerError {
    return new PluginWorkerError('plugin_worker_unavailable', `${this.options.label}: ${method} failed: ${reason}`);
  }

  private send(message: Record<string, unknown>): void {
    if (this.closedBy !== null || this.options.output.writableEnded) return;
    this.options.output.write(`${JSON.stringify(message)}\n`);
  }

  private receive(line: string): void {
    const { logger, logFields, label } = this.options;
    const msg = parseLine(line);
    switch (msg.kind) {
      case 'invalid':
        logger.warn(
          { ...logFields, reason: msg.reason, line: clip(line, 500) },
          'plugin worker wrote a line that is not a JSON-RPC message; ignored',
        );
        return;
      case 'malformed_reply': {
        const call = this.pending.get(msg.id);
        if (!call)
          return logger.warn(
            { ...logFields, reason: msg.reason },
            'plugin worker sent a malformed reply to no pending call; ignored',
          );
        call.reject(
          new PluginWorkerError('plugin_protocol_error', `${label}: malformed reply to ${call.method}: ${msg.reason}`),
        );
        return;
      }
      case 'reply': {
        const call = msg.id === null ? undefined : this.pending.get(msg.id);
        if (!call) {
          const fields = { ...logFields, id: msg.id, error: msg.error ? clip(msg.error.message, 500) : undefined };
          return logger.debug(fields, 'plugin worker replied to no pending call (timed out or unknown); ignored');
        }
        if (msg.error) call.reject(fromRpcError(label, call.method, msg.error));
        else call.resolve(msg.result);
        return;
      }
      case 'notification':
        this.options.onNotification(msg.message);
        return;
      case 'request': {
        const { id, method } = msg.message;
        this.options.onRequest(msg.message).then(
          (result) => this.send({ jsonrpc: '2.0', id, result: result ?? null }),
          (err: unknown) => {
            const e = err as { code?: unknown; message?: unknown };
            const code = typeof e.code === 'number' ? e.code : RPC_CODES.METHOD_NOT_FOUND;
            const message = typeof e.message === 'string' ? e.message : `${method} failed`;
            this.send({ jsonrpc: '2.0', id, error: { code, message } });
          },
        );
        return;
      }
    }
  }
}

function fromRpcError(label: string, method: string, error: z.infer<typeof RpcErrorBody>): PluginWorkerError {
  const message = `${label}: ${method} failed: ${clip(error.message, 2000)} (JSON-RPC error ${error.code})`;
  if (error.code === RPC_CODES.METHOD_NOT_IMPLEMENTED || error.code === RPC_CODES.METHOD_NOT_FOUND) {
    return new PluginWorkerError('plugin_method_not_implemented', message, error);
  }
  return new PluginWorkerError('plugin_error', message, error);
}

/** The reason a signal was aborted with when it is an error, else a `plugin_call_cancelled` error. */
export function abortError(signal: AbortSignal | undefined, message: string): Error {
  return signal?.reason instanceof Error ? signal.reason : new PluginWorkerError('plugin_call_cancelled', message);
}

/** The worker→host calls envrun answers; every other one is refused. */
const HOST_METHODS = ['log', 'config.get'];
const LogParams = z.object({
  level: z.enum(['info', 'warn', 'error', 'debug']),
  message: z.string(),
  meta: z.record(z.string(), z.unknown()).nullish(),
});
const OutputParams = z.object({ stream: z.string(), chunk: z.string() });

/**
 * What one worker may ask of the host: `log` (a request or a notification) goes to the logger, `config.get`
 * returns the plugin's config, `execute.log` chunks go to the call they belong to; any other request is
 * refused with METHOD_NOT_FOUND naming it, so the plugin fails instead of waiting.
 */
export class HostMethods {
  constructor(
    private readonly o: {
      logger: PluginLogger;
      fields: Record<string, unknown>;
      config: Record<string, unknown>;
      /** The output callbacks of calls in flight, by invocation id. */
      outputs: Map<string, (stream: string, chunk: string) => void>;
    },
  ) {}

  async request(message: WorkerRequest): Promise<unknown> {
    if (message.method === 'log') return this.log(message.params);
    if (message.method === 'config.get') return this.o.config;
    const method = clip(message.method, 100);
    this.o.logger.warn({ ...this.o.fields, method }, 'plugin worker called a host method envrun does not offer');
    const refusal = `envrun's plugin host does not offer "${method}" (it offers: ${HOST_METHODS.join(', ')})`;
    throw Object.assign(new Error(refusal), { code: RPC_CODES.METHOD_NOT_FOUND });
  }

  notification(message: WorkerNotification): void {
    if (message.method === 'log') return void this.log(message.params);
    if (message.method === 'execute.log') {
      const to = message.paperclipInvocationId && this.o.outputs.get(message.paperclipInvocationId);
      const chunk = OutputParams.safeParse(message.params);
      if (to && chunk.success) to(chunk.data.stream, chunk.data.chunk);
      return;
    }
    this.o.logger.debug({ ...this.o.fields, method: clip(message.method, 100) }, 'plugin worker notification ignored');
  }

  /** A worker's log line: its message cut to 2,000 characters, its meta kept when small (secrets redacted). */
  private log(params: unknown): null {
    const parsed = LogParams.safeParse(params);
    if (!parsed.success) {
      this.o.logger.warn(this.o.fields, 'plugin worker sent a malformed log call; ignored');
      return null;
    }
    const { level, message, meta } = parsed.data;
    const size = meta ? JSON.stringify(meta).length : 0;
    const extra = !meta ? {} : size <= 4000 ? { meta } : { metaOmitted: `${size} characters` };
    this.o.logger[level]({ ...this.o.fields, ...extra }, clip(message, 2000));
    return null;
  }
}
