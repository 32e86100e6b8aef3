// Starts `temporal server start-dev` with envrun's search attributes registered and waits until it answers.
// As a script (`npm run temporal`): a persistent dev server with the Web UI, in the foreground.
import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../lib/net.js';
import { SEARCH_ATTRIBUTE_REGISTRATIONS } from '../contracts/index.js';
import { ensureTemporalCli } from './temporal-cli.js';

export interface DevServerOptions {
  port?: number;
  uiPort?: number;
  /** Persistent SQLite file; in memory when absent. */
  dbFilename?: string;
  headless?: boolean;
  namespace?: string;
  logFile?: string;
  ip?: string;
  /** `--dynamic-config-value KEY=VALUE` settings for the server (over DEV_SERVER_DYNAMIC_CONFIG). */
  dynamicConfig?: Record<string, string | number | boolean>;
  /** `--sqlite-pragma NAME=VALUE` settings, with `dbFilename` only (over DEV_SERVER_SQLITE_PRAGMAS). */
  sqlitePragmas?: Record<string, string>;
}

/**
 * The dynamic config every dev server gets (docs/benchmarks.md, "Dev server settings"):
 * - eager activity dispatch: an activity scheduled by a workflow task goes straight back to the worker that
 *   completed it, without a trip through the task queue (off by default in the server);
 * - no search-attribute cache refresh on every read: `temporal server start-dev` turns it on so that an
 *   attribute added at run time is visible at once; envrun's are registered at start (`--search-attribute`);
 * - the transfer queue read at up to 1000 times a second instead of 20: every workflow task and every
 *   non-eager activity task goes from history to matching through that queue, and the server's default of 20
 *   reads a second per shard (the dev server has one) made each workflow task wait up to 50 ms whenever the
 *   previous one was less than 50 ms before. Measured with `npx tsx bench/latency-probe.ts --configs
 *   base,current --c50 200` (server defaults vs these settings; c=1, 3 interleaved reps of 30, median of the
 *   reps' p50 with their min–max; a shared 2-core machine): 8 sequential no-op activities 450 (449–451) → 93
 *   (59–96) ms, i.e. 50 → 6 ms per workflow task; start + result of an empty workflow 50 (49–55) → 14 (9–15) ms;
 *   update-with-start answered at once 36 (29–44) → 13 (9–15) ms; c=50 runs/s 43 (32–47) → 44 (40–70) and
 *   server CPU per run 12.8 (11.9–13.9) → 13.9 (12.6–15.2) ms, the same within the noise. The queue is read
 *   when a task is written (or once a minute), not on a timer: an idle server does no more work;
 * - one task-queue partition instead of 4: a single worker needs no partitions, and a task written to a
 *   partition where no poller waits has to be forwarded. No change of the medians, but with the fast transfer
 *   queue and 4 partitions about 1 start in 400 took ~2 s (10 of ~3,600 c=1 samples), with one none of ~2,700.
 * Not the cause: Nagle's algorithm; the worker (tonic), the client (grpc-js) and the server (Go) all set TCP_NODELAY.
 */
export const DEV_SERVER_DYNAMIC_CONFIG: Record<string, string | number | boolean> = {
  'system.enableActivityEagerExecution': true,
  'system.forceSearchAttributesCacheRefreshOnRead': false,
  'history.transferProcessorMaxPollRPS': 1000,
  'matching.numTaskqueueReadPartitions': 1,
  'matching.numTaskqueueWritePartitions': 1,
};

/** SQLite pragmas of a file-backed dev server (`dbFilename`): none measurably helped (docs/benchmarks.md). */
export const DEV_SERVER_SQLITE_PRAGMAS: Record<string, string> = {};

export interface DevServer {
  address: string;
  uiUrl: string | null;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const cli = await ensureTemporalCli();
  const ip = options.ip ?? '127.0.0.1';
  const port = options.port ?? (await freePort());
  const uiPort = options.headless ? null : (options.uiPort ?? (await freePort()));
  const namespace = options.namespace ?? 'default';
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    '--namespace',
    namespace,
    '--log-level',
    'warn',
  ];
  if (uiPort === null) args.push('--headless');
  else args.push('--ui-port', String(uiPort));
  if (options.dbFilename) {
    mkdirSync(dirname(resolve(options.dbFilename)), { recursive: true });
    args.push('--db-filename', resolve(options.dbFilename));
  }
  for (const sa of SEARCH_ATTRIBUTE_REGISTRATIONS) args.push('--search-attribute', `${sa.name}=${sa.type}`);
  const dynamicConfig = { ...DEV_SERVER_DYNAMIC_CONFIG, ...options.dynamicConfig };
  for (const [key, value] of Object.entries(dynamicConfig))
    args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);
  if (options.dbFilename) {
    for (const [name, value] of Object.entries({ ...DEV_SERVER_SQLITE_PRAGMAS, ...options.sqlitePragmas }))
      args.push('--sqlite-pragma', `${name}=${value}`);
  }
  const out = options.logFile ? openSync(options.logFile, 'a') : 'ignore';
  const child = spawn(cli, args, { stdio: ['ignore', out, out] });
  const address = `${ip}:${port}`;
  let exitCode: number | null = null;
  child.once('exit', (code) => {
    exitCode = code ?? -1;
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exitCode !== null)
      throw new Error(
        `temporal server start-dev exited with code ${exitCode}${options.logFile ? `; see ${options.logFile}` : ''}`,
      );
    try {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await conn.workflowService.getSystemInfo({});
        await conn.workflowService.describeNamespace({ namespace });
      } finally {
        await conn.close();
      }
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`Temporal dev server on ${address} did not answer within 60 s: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    address,
    uiUrl: uiPort === null ? null : `http://${ip}:${uiPort}`,
    process: child,
    async stop() {
      if (exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dataDir = resolve(process.env.ENVRUN_DATA_DIR ?? './.envrun');
  const [host, portText] = (process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233').split(':');
  startDevServer({
    ip: host,
    port: Number(portText),
    uiPort: Number(process.env.ENVRUN_UI_PORT ?? 8233),
    dbFilename: process.env.ENVRUN_TEMPORAL_DB ?? join(dataDir, 'temporal.db'),
    logFile: join(dataDir, 'temporal.log'),
  })
    .then((server) => {
      console.log(`Temporal dev server on ${server.address}; Web UI ${server.uiUrl}. Ctrl+C stops it.`);
      const stop = () => void server.stop().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    })
    .catch((err: unknown) => {
      console.error((err as Error).message);
      process.exit(1);
    });
}
