// The worker's configuration: the client's (client/config.ts: Temporal, task queue, database, provider
// and plugin modules) plus what only the worker reads, validated with zod at start.
import { hostname } from 'node:os';
import { z } from 'zod';
import { durationMs } from '../contracts/duration.js';
import { ClientEnvSchema, clientConfigFrom, hostPort, parseEnv, type ClientConfig } from '../client/config.js';

export { ConfigError } from '../client/config.js';

const positiveInt = z.coerce.number().int().positive();
/**
 * Runs whose workflow state the worker keeps in memory. A run held at ready waits, idle, for up to its
 * lease TTL; past this many, the least recently used is evicted and replayed from history when it next
 * has work (complete, renew, expiry), which bounds the worker's memory however many runs are held. 50 is
 * above the runs a 2-core worker moves at once (its 40 workflow task slots; a smaller cache would evict
 * runs mid-flight) and keeps 1,000 held runs within 250 MB; replaying an evicted run on completion costs
 * a few ms (docs/benchmarks.md, "Worker memory").
 */
export const DEFAULT_MAX_CACHED_WORKFLOWS = 50;

export const EnvSchema = ClientEnvSchema.extend({
  ENVRUN_SHUTDOWN_GRACE_MS: positiveInt.default(10_000),
  ENVRUN_WORKFLOW_BUNDLE: z.string().min(1).optional(),
  ENVRUN_PROVISION_TIMEOUT_MS: positiveInt.default(10 * 60_000),
  ENVRUN_MAX_CONCURRENT_ACTIVITIES: positiveInt.default(200),
  ENVRUN_MAX_CACHED_WORKFLOWS: z.coerce.number().int().min(0).default(DEFAULT_MAX_CACHED_WORKFLOWS),
  ENVRUN_METRICS_ADDRESS: hostPort.optional(),
  ENVRUN_REAPER_EVERY: z
    .string()
    .refine((v) => v === 'off' || durationMs(v) !== null, 'must be a duration like 5m, or off')
    .default('5m'),
  ENVRUN_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
  ENVRUN_HOST_ID: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'must be letters, digits, dot, dash or underscore')
    .optional(),
});

export interface EnvRunConfig extends ClientConfig {
  shutdownGraceMs: number;
  workflowBundle: string | undefined;
  provisionTimeoutMs: number;
  maxConcurrentActivities: number;
  maxCachedWorkflows: number;
  logLevel: 'TRACE' | 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  /** How often the reaper schedule sweeps orphaned leases; null = the worker installs no schedule. */
  reaperEvery: string | null;
  /** host:port of the Prometheus endpoint (/metrics); none when absent. */
  metricsAddress: string | undefined;
  /** This worker host (ENVRUN_HOST_ID, default the hostname): it also polls the host's own queue. */
  hostId: string;
}

/** Reads and validates the configuration; a bad value throws a ConfigError naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): EnvRunConfig {
  const e = parseEnv(EnvSchema, env);
  return {
    ...clientConfigFrom(e, env),
    shutdownGraceMs: e.ENVRUN_SHUTDOWN_GRACE_MS,
    workflowBundle: e.ENVRUN_WORKFLOW_BUNDLE,
    provisionTimeoutMs: e.ENVRUN_PROVISION_TIMEOUT_MS,
    maxConcurrentActivities: e.ENVRUN_MAX_CONCURRENT_ACTIVITIES,
    maxCachedWorkflows: e.ENVRUN_MAX_CACHED_WORKFLOWS,
    logLevel: e.ENVRUN_LOG_LEVEL,
    metricsAddress: e.ENVRUN_METRICS_ADDRESS,
    reaperEvery: e.ENVRUN_REAPER_EVERY === 'off' ? null : e.ENVRUN_REAPER_EVERY,
    hostId: e.ENVRUN_HOST_ID ?? hostname(),
  };
}
