// `npm run worker`: the envrun worker process (runWorker with the environment's configuration).
import { ConfigError, loadConfig } from './config.js';
import { runWorker } from './index.js';
import { createLogger, type EnvRunLogger } from './logging.js';

let logger: EnvRunLogger | undefined;

async function main(): Promise<void> {
  const config = loadConfig();
  // JSON lines on stdout (readable on a TTY) at ENVRUN_LOG_LEVEL: envrun's, the SDK's and Core's.
  logger = createLogger({ level: config.logLevel });
  await runWorker(config, { logger }); // resolves after SIGINT/SIGTERM and the grace time
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
