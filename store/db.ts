import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ensureEmbeddedStore } from './embedded.js';
import * as schema from './schema.js';

export type Db = NodePgDatabase<typeof schema>;

const MIGRATIONS = fileURLToPath(new URL('./migrations', import.meta.url));
const MIGRATION_LOCK = 7_345_120_001; // advisory lock id: one migrator at a time across processes

export interface DatabaseOptions {
  /** Any PostgreSQL server; when absent the embedded server of `dataDir` is used. */
  databaseUrl?: string | undefined;
  dataDir: string;
  /** Database created on the embedded server. */
  embeddedDatabase?: string;
  poolSize?: number;
  log?: (line: string) => void;
}

/** Resolves the connection URL: DATABASE_URL as given, or the embedded server (started if needed). */
export async function resolveDatabaseUrl(options: DatabaseOptions): Promise<string> {
  if (options.databaseUrl) return options.databaseUrl;
  const adminUrl = await ensureEmbeddedStore(options.dataDir, { log: options.log });
  const name = options.embeddedDatabase ?? 'envrun';
  await createDatabaseIfMissing(adminUrl, name);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function createDatabaseIfMissing(adminUrl: string, name: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`invalid database name ${name}`);
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (found.rowCount === 0) {
      await client.query(`create database ${name}`).catch((err: { code?: string }) => {
        if (err.code !== '42P04' && err.code !== '23505') throw err; // created meanwhile by another process
      });
    }
  } finally {
    await client.end();
  }
}

export interface Database {
  db: Db;
  pool: pg.Pool;
  close(): Promise<void>;
}

/** Opens a pool on the URL and applies pending migrations (serialised across processes). */
export async function openDatabase(url: string, poolSize = 10): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url, max: poolSize, idleTimeoutMillis: 30_000 });
  pool.on('error', () => undefined); // an idle client's error is reported to the next query instead
  const db = drizzle(pool, { schema });
  const lockClient = await pool.connect();
  try {
    await lockClient.query('select pg_advisory_lock($1)', [MIGRATION_LOCK]);
    // On the lock's own connection: a pool of one must not wait for a second connection.
    await migrate(drizzle(lockClient, { schema }), { migrationsFolder: MIGRATIONS });
  } finally {
    await lockClient.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    lockClient.release();
  }
  return { db, pool, close: () => pool.end() };
}

/** Never print a password: for logs and errors. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable database url>';
  }
}
