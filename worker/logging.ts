// The worker's logs: JSON lines on stdout through pino (a small readable formatter on a TTY), with
// Temporal's own logs (the SDK's, and Core's forwarded from the native side) routed through the same
// logger, and one line per step started / finished / failed carrying the run's ids.
//
// Nothing here logs a step's input or output: environment configs may hold secret references and
// provider metadata may hold anything, so only ids are ever taken from them (`runIdsOf`).
import type { Context as ActivityContext } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import {
  LogTimestamp,
  makeTelemetryFilterString,
  type ActivityInterceptorsFactory,
  type LogExporterConfig,
  type LogLevel,
  type LogMetadata,
  type Logger,
} from '@temporalio/worker';
import { performance } from 'node:perf_hooks';
import { pino, type DestinationStream, type Logger as Pino } from 'pino';

export type { LogLevel } from '@temporalio/worker';
export type EnvRunLogger = Pino;

const PINO_LEVELS = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' } as const;

export interface CreateLoggerOptions {
  level: LogLevel;
  /** Human-readable lines instead of JSON; default: when stdout is a TTY. */
  pretty?: boolean;
  /**
   * Where lines go; default stdout, buffered: lines written while a write is in flight go out together
   * (one write per line cost ~10% of the worker's CPU under load, docs/benchmarks.md), and pino flushes the
   * buffer synchronously when the process exits.
   */
  destination?: DestinationStream;
}

/**
 * The worker's logger: one JSON object a line (`level` as a name, `time` in ISO 8601, `msg`), at
 * `level` and above. Errors under `error`/`err` keep their name, message, code and stack, never their
 * details; keys that name a secret are censored wherever they appear in the first two levels.
 */
export function createLogger(options: CreateLoggerOptions): EnvRunLogger {
  const pretty = options.pretty ?? (options.destination === undefined && process.stdout.isTTY === true);
  const destination =
    options.destination ?? (pretty ? prettyDestination() : pino.destination({ dest: 1, sync: false }));
  return pino(
    {
      name: 'envrun',
      level: PINO_LEVELS[options.level],
      // `time` comes from the mixin, so a line relayed from Temporal's buffered runtime logger keeps
      // the time it was emitted at (see TemporalLogger), not the time it was flushed.
      timestamp: false,
      mixin: () => ({ time: new Date().toISOString() }),
      formatters: { level: (label) => ({ level: label }) },
      serializers: { error: serializeError, err: serializeError },
      redact: { paths: SECRET_KEYS.flatMap((k) => [k, `*.${k}`]), censor: '[redacted]' },
    },
    destination,
  );
}

const SECRET_KEYS = ['password', 'passphrase', 'privateKey', 'secret', 'token', 'authorization', 'apiKey'];

interface SerializedError {
  type: string;
  message: string;
  code?: string;
  nonRetryable?: boolean;
  stack?: string;
  cause?: SerializedError;
}

/** An error as a log field: name, message, the failure's code (ApplicationFailure type), stack, causes. */
export function serializeError(err: unknown, depth = 0): SerializedError | unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? { type: 'string', message: clip(err, 2000) } : err;
  const out: SerializedError = { type: err.name, message: clip(err.message, 2000) };
  const code = errorCodeOf(err);
  if (code) out.code = code;
  if (err instanceof ApplicationFailure) out.nonRetryable = err.nonRetryable === true;
  if (err.stack) out.stack = clip(err.stack, 4000);
  if (err.cause instanceof Error && depth < 3) out.cause = serializeError(err.cause, depth + 1) as SerializedError;
  return out;
}

/** The error code of a step's failure: the ApplicationFailure type (an envrun error code), else its kind. */
export function errorCodeOf(err: unknown): string | undefined {
  if (err instanceof ApplicationFailure && err.type) return err.type;
  if (err instanceof CancelledFailure) return 'cancelled';
  if (err instanceof Error) return (err as { code?: unknown }).code?.toString() ?? err.name;
  return undefined;
}

const clip = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

/**
 * The SDK's `Logger` over the worker's pino logger: what `Runtime.install({ logger })` takes, so the
 * worker's, the workflows' and the activities' SDK lines (and Core's, when forwarded) are JSON lines too.
 */
export class TemporalLogger implements Logger {
  constructor(private readonly logger: EnvRunLogger) {}

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const method = PINO_LEVELS[level] ?? 'info';
    if (!this.logger.isLevelEnabled(method)) return;
    const { [LogTimestamp]: nanos, ...fields } = meta ?? {};
    if (typeof nanos === 'bigint') fields.time = new Date(Number(nanos / 1_000_000n)).toISOString();
    this.logger[method](fields, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

/**
 * `telemetryOptions.logging` for `Runtime.install`: Core's logs at `level` forwarded to the Runtime's
 * logger (instead of printed by the native side on their own), other native crates' at ERROR.
 */
export function coreLogForwarding(level: LogLevel): LogExporterConfig {
  return { filter: makeTelemetryFilterString({ core: level }), forward: {} };
}

/** The ids of a run found in a step's input or output: never anything else from it. */
export interface RunIds {
  companyId?: string;
  heartbeatRunId?: string;
  environmentId?: string;
  leaseId?: string;
}

const ID_KEYS = ['companyId', 'heartbeatRunId', 'environmentId', 'leaseId'] as const;

/**
 * The run's ids from whatever a step takes or returns: a RunRequest (`resolveEnvironment`),
 * `{request, environment, lease, …}` (most steps), `{companyId, heartbeatRunId, leaseId, …}` (release,
 * renew), an activity-log row, a lease. Only short strings are taken; what has none gives `{}`.
 */
export function runIdsOf(value: unknown): RunIds {
  const ids: RunIds = {};
  if (!isRecord(value)) return ids;
  const take = (key: keyof RunIds, v: unknown) => {
    if (ids[key] === undefined && typeof v === 'string' && v.length > 0 && v.length <= 200) ids[key] = v;
  };
  const environment = value.environment;
  if (isRecord(environment)) {
    take('environmentId', environment.id);
    take('companyId', environment.companyId);
  }
  const lease = value.lease;
  if (isRecord(lease)) {
    take('leaseId', lease.id);
    for (const key of ['companyId', 'heartbeatRunId', 'environmentId'] as const) take(key, lease[key]);
  }
  const request = value.request;
  if (isRecord(request)) {
    for (const key of ['companyId', 'heartbeatRunId', 'environmentId'] as const) take(key, request[key]);
  }
  for (const key of ID_KEYS) take(key, value[key]);
  if (value.entityType === 'environment_lease') {
    // An activity-log row (contracts/activity-log.ts): its run and its lease.
    take('heartbeatRunId', value.runId);
    take('leaseId', value.entityId);
    if (isRecord(value.details)) take('environmentId', value.details.environmentId);
  }
  if (typeof value.leasePolicy === 'string' && typeof value.environmentId === 'string') take('leaseId', value.id); // a lease
  // The leases a release returns: their ids when there is exactly one.
  if (Array.isArray(value.leases) && value.leases.length === 1) {
    const only = runIdsOf(value.leases[0]);
    for (const key of ID_KEYS) take(key, only[key]);
  }
  return ids;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Every step's log lines carry the run's ids (`companyId`, `heartbeatRunId`, `environmentId`, `leaseId`
 * where its input has them) and `step` (the activity type), beside what the SDK already attaches
 * (`workflowId`, `activityType`, `attempt`; its `taskToken` is dropped); and each step logs `step started`,
 * then `step finished` with its duration or `step failed` with its error code.
 */
export const stepLogInterceptor: ActivityInterceptorsFactory = (ctx: ActivityContext) => {
  let ids: RunIds = {};
  const step = ctx.info.activityType;
  return {
    inbound: {
      async execute(input, next) {
        ids = runIdsOf(input.args[0]);
        const started = performance.now();
        const durationMs = () => Math.round(performance.now() - started);
        ctx.log.info('step started');
        try {
          const result = await next(input);
          ids = { ...runIdsOf(result), ...ids };
          ctx.log.info('step finished', { durationMs: durationMs() });
          return result;
        } catch (err) {
          const code = errorCodeOf(err);
          if (code === 'cancelled' || ctx.cancellationSignal.aborted) {
            ctx.log.info('step cancelled', { durationMs: durationMs() });
          } else {
            ctx.log.warn('step failed', {
              durationMs: durationMs(),
              errorCode: code,
              errorMessage: clip(err instanceof Error ? err.message : String(err), 2000),
              retryable: !(err instanceof ApplicationFailure && err.nonRetryable),
            });
          }
          throw err;
        }
      },
    },
    outbound: {
      getLogAttributes(attributes, next) {
        // The task token is a capability to complete the task, of no use in a log line.
        const { taskToken: _token, ...rest } = attributes;
        return next({ ...rest, step, ...ids });
      },
    },
  };
};

/**
 * A readable line on a terminal: `12:00:01.234 INFO  step finished  step=acquireLease attempt=1 …` (UTC),
 * an error's stack below it.
 */
function prettyDestination(): DestinationStream {
  const colors: Record<string, number> = { trace: 90, debug: 36, info: 32, warn: 33, error: 31, fatal: 35 };
  const hidden = new Set([
    ...['level', 'time', 'msg', 'pid', 'hostname', 'name', 'namespace', 'taskQueue', 'spanContexts'],
    ...['activityType', 'activityId', 'isLocal', 'workflowRunId', 'workflowType'],
  ]);
  const show = (v: unknown) => (typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : clip(JSON.stringify(v), 500));
  return {
    write(line: string) {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        process.stdout.write(line);
        return;
      }
      const level = String(entry.level ?? 'info');
      const time = typeof entry.time === 'string' ? entry.time.slice(11, 23) : '';
      const stacks: string[] = [];
      const fields = Object.entries(entry)
        .filter(([k, v]) => !hidden.has(k) && v !== undefined)
        .map(([k, v]) => {
          if (!isRecord(v) || typeof v.message !== 'string') return `${k}=${show(v)}`;
          if (typeof v.stack === 'string') stacks.push(v.stack.replace(/^/gm, '    '));
          return `${k}=${show(v.code ? `${String(v.code)}: ${v.message}` : v.message)}`;
        })
        .join(' ');
      const tag = `\x1b[${colors[level] ?? 0}m${level.toUpperCase().padEnd(5)}\x1b[0m`;
      const rest = fields ? `  \x1b[2m${fields}\x1b[0m` : '';
      process.stdout.write(`${time} ${tag} ${String(entry.msg ?? '')}${rest}\n${stacks.map((t) => `${t}\n`).join('')}`);
    },
  };
}
