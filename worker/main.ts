// `npm run worker`: the envrun worker process.
import { Client } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { redactUrl } from '../store/db.js';
import { ConfigError, loadConfig } from './config.js';
import { createRuntimeDeps } from './deps.js';
import { ensureSearchAttributes } from './search-attributes.js';
import { REAPER_SCHEDULE_ID, installReaperSchedule } from '../client/reaper-schedule.js';
import { createWorker } from './worker.js';

async function main(): Promise<void> {
  const config = loadConfig();
  Runtime.install({
    logger: new DefaultLogger(config.logLevel),
    shutdownSignals: ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR2'],
    // Temporal's runtime metrics and envrun's own (runs by phase and error code, durations) on /metrics.
    ...(config.metricsAddress
      ? { telemetryOptions: { metrics: { prometheus: { bindAddress: config.metricsAddress } } } }
      : {}),
  });
  const deps = await createRuntimeDeps(config, { poolSize: 20, log: (l) => console.log(`[envrun] ${l}`) });
  const connection = await NativeConnection.connect(config.temporal.connection);
  const added = await ensureSearchAttributes(connection, config.temporal.namespace);
  if (added.length) console.log(`[envrun] registered search attributes: ${added.join(', ')}`);
  const temporal = new Client({ connection, namespace: config.temporal.namespace });
  deps.temporal = temporal;
  if (config.reaperEvery && (await installReaperSchedule(temporal, config.taskQueue, config.reaperEvery))) {
    console.log(`[envrun] reaper schedule ${REAPER_SCHEDULE_ID} installed (every ${config.reaperEvery})`);
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
  console.log(
    `[envrun] worker on ${config.temporal.address} namespace=${config.temporal.namespace} taskQueue=${config.taskQueue} ` +
      `store=${config.databaseUrl ? redactUrl(config.databaseUrl) : `embedded (${config.dataDir})`}`,
  );
  try {
    await worker.run(); // resolves after SIGINT/SIGTERM and the grace time
  } finally {
    await connection.close();
    await deps.close();
    console.log('[envrun] worker stopped');
  }
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`envrun worker: ${err.message}`);
    process.exit(2);
  }
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
