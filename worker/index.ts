// `envrun/worker`: what a process needs to run an envrun worker. `runWorker()` is the whole worker process
// (what `npm run worker` runs: configuration from the environment, the store, search attributes, the
// reaper schedule, the worker until SIGINT/SIGTERM); the parts are exported for a process that assembles
// its own (its own Runtime, connection or activity dependencies).
import { Client } from '@temporalio/client';
import { NativeConnection, Runtime } from '@temporalio/worker';
import { REAPER_SCHEDULE_ID, installReaperSchedule } from '../client/reaper-schedule.js';
import { redactUrl } from '../store/db.js';
import { loadConfig, type EnvRunConfig } from './config.js';
import { createRuntimeDeps } from './deps.js';
import { ensureSearchAttributes } from './search-attributes.js';
import { bundleWorkflowsInChildProcess, createWorker, type EnvRunWorker } from './worker.js';
import { TemporalLogger, coreLogForwarding, createLogger, type EnvRunLogger } from './logging.js';

export {
  bundleWorkflowsInChildProcess,
  createWorker,
  WORKFLOWS_PATH,
  type CreateWorkerOptions,
  type TemporaryBundle,
} from './worker.js';
export {
  TemporalLogger,
  coreLogForwarding,
  createLogger,
  runIdsOf,
  stepLogInterceptor,
  type EnvRunLogger,
} from './logging.js';
export { ConfigError, DEFAULT_MAX_CACHED_WORKFLOWS, loadConfig, type EnvRunConfig } from './config.js';
export { createRuntimeDeps, type RuntimeDeps } from './deps.js';
export { ensureSearchAttributes } from './search-attributes.js';
export { REAPER_SCHEDULE_ID, installReaperSchedule } from '../client/reaper-schedule.js';
export { bundleWorkflows } from './bundle.js';

export interface RunWorkerOptions {
  /** Where the worker's progress lines go; JSON lines on stdout at the configured level when absent. */
  log?: (line: string) => void;
  /** The logger to use (and to give Temporal's Runtime); one at the configured level when absent. */
  logger?: EnvRunLogger;
  /**
   * Installs Temporal's Runtime for this process (its logger at the configured level, SIGINT/SIGTERM/SIGQUIT/
   * SIGUSR2 shut the worker down, the Prometheus endpoint of ENVRUN_METRICS_ADDRESS). Default true; false
   * where the process installs its own Runtime, and then stops the worker itself (see `onStarted`).
   */
  installRuntime?: boolean;
  /** Called with the worker once it is created, before it polls: `worker.shutdown()` stops it. */
  onStarted?: (worker: EnvRunWorker) => void;
}

/**
 * Runs an envrun worker with `config` (by default `loadConfig()`: the environment variables the README lists;
 * a bad value throws a ConfigError naming it). Resolves once the worker has shut down and drained (SIGINT or
 * SIGTERM with the installed Runtime, or `worker.shutdown()`), its connection and database closed.
 */
export async function runWorker(config: EnvRunConfig = loadConfig(), options: RunWorkerOptions = {}): Promise<void> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  const say = (fields: Record<string, unknown>, line: string) =>
    options.log ? options.log(line) : logger.info(fields, line);
  const log = (line: string) => say({}, line);
  if (options.installRuntime ?? true) {
    Runtime.install({
      logger: new TemporalLogger(logger),
      shutdownSignals: ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR2'],
      telemetryOptions: {
        logging: coreLogForwarding(config.logLevel),
        ...(config.metricsAddress ? { metrics: { prometheus: { bindAddress: config.metricsAddress } } } : {}),
      },
    });
  }
  const deps = await createRuntimeDeps(config, { poolSize: 20, log, logger });
  let connection: NativeConnection | undefined;
  try {
    connection = await NativeConnection.connect(config.temporal.connection);
    const added = await ensureSearchAttributes(connection, config.temporal.namespace);
    if (added.length) say({ searchAttributes: added }, `registered search attributes: ${added.join(', ')}`);
    const temporal = new Client({ connection, namespace: config.temporal.namespace });
    deps.temporal = temporal;
    if (config.reaperEvery && (await installReaperSchedule(temporal, config.taskQueue, config.reaperEvery))) {
      log(`reaper schedule ${REAPER_SCHEDULE_ID} installed (every ${config.reaperEvery})`);
    }
    // No prebuilt bundle: bundled in a child process, so webpack never enters this one (worker/worker.ts).
    const bundle = config.workflowBundle ? null : await bundleWorkflowsInChildProcess();
    let worker: EnvRunWorker;
    try {
      worker = await createWorker({
        connection,
        namespace: config.temporal.namespace,
        taskQueue: config.taskQueue,
        deps,
        workflowBundlePath: config.workflowBundle ?? bundle!.path,
        shutdownGraceMs: config.shutdownGraceMs,
        maxConcurrentActivities: config.maxConcurrentActivities,
        maxCachedWorkflows: config.maxCachedWorkflows,
      });
    } finally {
      await bundle?.remove();
    }
    const store = config.databaseUrl ? redactUrl(config.databaseUrl) : `embedded (${config.dataDir})`;
    const { address, namespace } = config.temporal;
    say(
      { address, namespace, taskQueue: config.taskQueue, hostId: config.hostId, store },
      `worker on ${address} namespace=${namespace} taskQueue=${config.taskQueue} host=${config.hostId} store=${store}`,
    );
    options.onStarted?.(worker);
    await worker.run();
  } finally {
    await connection?.close();
    await deps.close();
    log('worker stopped');
  }
}
