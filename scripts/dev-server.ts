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
  /** `--dynamic-config-value KEY=VALUE` settings for the server. */
  dynamicConfig?: Record<string, string | number | boolean>;
}

export interface DevServer {
  address: string;
  uiUrl: string | null;
  process: ChildProcess;
  stop(): Promise<void>;
}

export { freePort };

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
  // Eager activity dispatch: an activity scheduled by a workflow task goes straight back to the worker
  // that completed it, without a trip through the task queue (off by default in the server).
  const dynamicConfig = { 'system.enableActivityEagerExecution': true, ...options.dynamicConfig };
  for (const [key, value] of Object.entries(dynamicConfig))
    args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);
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
