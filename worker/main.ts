// `npm run worker`: the envrun worker process.
import { Client } from '@temporalio/client';
import { NativeConnection, Runtime } from '@temporalio/worker';
import { redactUrl } from '../store/db.js';
import { ConfigError, loadConfig } from './config.js';
import { createRuntimeDeps } from './deps.js';
import { ensureSearchAttributes } from './search-attributes.js';
import { REAPER_SCHEDULE_ID, installReaperSchedule } from '../client/reaper-schedule.js';
import { createWorker } from './worker.js';
import { TemporalLogger, coreLogForwarding, createLogger, type EnvRunLogger } from './logging.js';

let logger: EnvRunLogger | undefined;

async function main(): Promise<void> {
  const config = loadConfig();
  // JSON lines on stdout (readable on a TTY) at ENVRUN_LOG_LEVEL: envrun's, the SDK's and Core's.
  const log = (logger = createLogger({ level: config.logLevel }));
  Runtime.install({
    logger: new TemporalLogger(log),
    shutdownSignals: ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR2'],
    telemetryOptions: {
      logging: coreLogForwarding(config.logLevel),
      // Temporal's runtime metrics and envrun's own (runs by phase and error code, durations) on /metrics.
      ...(config.metricsAddress ? { metrics: { prometheus: { bindAddress: config.metricsAddress } } } : {}),
    },
  });
  const deps = await createRuntimeDeps(config, { poolSize: 20, log: (l) => log.info(l) });
  const connection = await NativeConnection.connect(config.temporal.connection);
  const added = await ensureSearchAttributes(connection, config.temporal.namespace);
  if (added.length) log.info({ searchAttributes: added }, `registered search attributes: ${added.join(', ')}`);
  const temporal = new Client({ connection, namespace: config.temporal.namespace });
  deps.temporal = temporal;
  if (config.reaperEvery && (await installReaperSchedule(temporal, config.taskQueue, config.reaperEvery))) {
    log.info(`reaper schedule ${REAPER_SCHEDULE_ID} installed (every ${config.reaperEvery})`);
  }
  const worker = await createWorker({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: config.taskQueue,
    deps,
    workflowBundlePath: config.workflowBundle,
    shutdownGraceMs: config.shutdownGraceMs,
    maxConcurrentActivities: config.maxConcurrentActivities,
    maxCachedWorkflows: config.maxCachedWorkflows,
  });
  const store = config.databaseUrl ? redactUrl(config.databaseUrl) : `embedded (${config.dataDir})`;
  log.info(
    { address: config.temporal.address, namespace: config.temporal.namespace, taskQueue: config.taskQueue, store },
    `worker on ${config.temporal.address} namespace=${config.temporal.namespace} taskQueue=${config.taskQueue} store=${store}`,
  );
  try {
    await worker.run(); // resolves after SIGINT/SIGTERM and the grace time
  } finally {
    await connection.close();
    await deps.close();
    log.info('worker stopped');
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`envrun worker: ${err.message}`);
    process.exit(2);
  }
  if (logger) logger.fatal({ error: err }, 'worker failed');
  else console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
