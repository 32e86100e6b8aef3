// The worker's configuration: the client's (client/config.ts: Temporal, task queue, database, provider
// and plugin modules) plus what only the worker reads, validated at start. Every variable, the deeper
// ones too (deployment rules, sandboxes, sync limits), is parsed by config/settings.ts: a bad value
// anywhere stops the worker at start with a ConfigError naming it.
import { hostname } from 'node:os';
import { ConfigError, DEFAULT_MAX_CACHED_WORKFLOWS, loadSettings } from '../config/settings.js';
import { clientConfigFrom, type ClientConfig } from '../client/config.js';

export { ConfigError } from '../config/settings.js';
/**
 * Runs whose workflow state the worker keeps in memory (ENVRUN_MAX_CACHED_WORKFLOWS). A run held at ready
 * waits, idle, for up to its lease TTL; past this many, the least recently used is evicted and replayed
 * from history when it next has work (complete, renew, expiry), which bounds the worker's memory however
 * many runs are held. 50 is above the runs a 2-core worker moves at once (its 40 workflow task slots; a
 * smaller cache would evict runs mid-flight) and keeps 1,000 held runs within 250 MB; replaying an evicted
 * run on completion costs a few ms (docs/benchmarks.md, "Worker memory").
 */
export { DEFAULT_MAX_CACHED_WORKFLOWS };

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
  const e = loadSettings(env);
  // A test setting that makes chosen addresses count as public: a production worker refuses to start with it.
  if (e.NODE_ENV === 'production' && e.ENVRUN_EGRESS_TEST_RESOLVE !== undefined)
    throw new ConfigError(
      'invalid configuration: ENVRUN_EGRESS_TEST_RESOLVE: a test setting, refused under NODE_ENV=production',
    );
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
