// Configuration from the environment, validated with zod at start. Temporal connection settings (address,
// namespace, TLS, API key, profiles) follow @temporalio/envconfig's conventions, so Temporal Cloud works too.
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { NativeConnectionOptions } from '@temporalio/worker';
import { resolve } from 'node:path';
import { z } from 'zod';
import { DEFAULT_TASK_QUEUE, describeZodError } from '../contracts/index.js';

const hostPort = z.string().regex(/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/, 'must be host:port');
const positiveInt = z.coerce.number().int().positive();
/**
 * Runs whose workflow state the worker keeps in memory. A run held at ready waits, idle, for up to its
 * lease TTL; past this many, the least recently used is evicted and replayed from history when it next
 * has work (complete, renew, expiry), which bounds the worker's memory however many runs are held.
 */
export const DEFAULT_MAX_CACHED_WORKFLOWS = 250;

export const EnvSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).max(255).optional(),
  ENVRUN_TASK_QUEUE: z.string().min(1).max(200).default(DEFAULT_TASK_QUEUE),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL').optional(),
  ENVRUN_DATA_DIR: z.string().min(1).default('./.envrun'),
  ENVRUN_SHUTDOWN_GRACE_MS: positiveInt.default(10_000),
  ENVRUN_WORKFLOW_BUNDLE: z.string().min(1).optional(),
  ENVRUN_PROVISION_TIMEOUT_MS: positiveInt.default(10 * 60_000),
  ENVRUN_MAX_CONCURRENT_ACTIVITIES: positiveInt.default(200),
  ENVRUN_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).default(DEFAULT_MAX_CACHED_WORKFLOWS),
  ENVRUN_PROVIDER_MODULES: z.string().optional(),
  ENVRUN_METRICS_ADDRESS: hostPort.optional(),
  ENVRUN_REAPER_EVERY: z.string().regex(/^(off|\d+(ms|s|m|h))$/, 'must be a duration like 5m, or off').default('5m'),
  ENVRUN_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
});

export interface EnvRunConfig {
  temporal: { connection: NativeConnectionOptions; namespace: string; address: string };
  taskQueue: string;
  databaseUrl: string | undefined;
  dataDir: string;
  shutdownGraceMs: number;
  workflowBundle: string | undefined;
  provisionTimeoutMs: number;
  maxConcurrentActivities: number;
  maxCachedWorkflows: number;
  logLevel: 'TRACE' | 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** Sandbox provider modules to load (ENVRUN_PROVIDER_MODULES, comma-separated paths). */
  providerModules: string[];
  /** How often the reaper schedule sweeps orphaned leases; null = the worker installs no schedule. */
  reaperEvery: string | null;
  /** host:port of the Prometheus endpoint (/metrics); none when absent. */
  metricsAddress: string | undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates the configuration; a bad value throws a ConfigError naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): EnvRunConfig {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) throw new ConfigError(`invalid configuration: ${describeZodError(parsed.error)}`);
  const e = parsed.data;
  let connect;
  try {
    connect = loadClientConnectConfig({ overrideEnvVars: stringEnv(env) });
  } catch (err) {
    throw new ConfigError(`invalid Temporal client configuration: ${(err as Error).message}`);
  }
  const connection: NativeConnectionOptions = { ...connect.connectionOptions };
  connection.address ??= e.TEMPORAL_ADDRESS ?? 'localhost:7233';
  return {
    temporal: { connection, namespace: connect.namespace ?? e.TEMPORAL_NAMESPACE ?? 'default', address: connection.address },
    taskQueue: e.ENVRUN_TASK_QUEUE,
    databaseUrl: e.DATABASE_URL,
    dataDir: resolve(e.ENVRUN_DATA_DIR),
    shutdownGraceMs: e.ENVRUN_SHUTDOWN_GRACE_MS,
    workflowBundle: e.ENVRUN_WORKFLOW_BUNDLE,
    provisionTimeoutMs: e.ENVRUN_PROVISION_TIMEOUT_MS,
    maxConcurrentActivities: e.ENVRUN_MAX_CONCURRENT_ACTIVITIES,
    maxCachedWorkflows: e.ENVRUN_MAX_CACHED_WORKFLOWS,
    logLevel: e.ENVRUN_LOG_LEVEL,
    metricsAddress: e.ENVRUN_METRICS_ADDRESS,
    reaperEvery: e.ENVRUN_REAPER_EVERY === 'off' ? null : e.ENVRUN_REAPER_EVERY,
    providerModules: (e.ENVRUN_PROVIDER_MODULES ?? '').split(',').map((s) => s.trim()).filter(Boolean),
  };
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((kv): kv is [string, string] => typeof kv[1] === 'string'));
}
