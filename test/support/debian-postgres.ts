// A separate, ordinary PostgreSQL server (Debian's `postgresql` package) for the store's tests, started
// by the test setup itself in a throwaway folder.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../../lib/net.js';

export function findDebianPostgresBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : null;
}

export interface DebianPostgres {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Starts a server on `dir`: a new cluster, or the existing one again (on the given port) after a stop. */
export async function startDebianPostgres(dir: string, options: { port?: number } = {}): Promise<DebianPostgres> {
  const bin = findDebianPostgresBin();
  if (!bin)
    throw new Error('Debian PostgreSQL server not found under /usr/lib/postgresql (apt-get install postgresql)');
  const asRoot = userInfo().uid === 0;
  const run = (cmd: string, args: string[]) =>
    asRoot ? (['runuser', ['-u', 'postgres', '--', cmd, ...args]] as const) : ([cmd, args] as const);
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o700);
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    const [initCmd, initArgs] = run(join(bin, 'initdb'), ['-D', dir, '--auth=trust', '-U', 'envrun', '--no-sync']);
    execFileSync(initCmd, initArgs, { stdio: 'ignore' });
  }
  const port = options.port ?? (await freePort());
  const [cmd, args] = run(join(bin, 'postgres'), [
    '-D',
    dir,
    '-p',
    String(port),
    '-k',
    dir,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
  ]);
  const child: ChildProcess = spawn(cmd, args, { stdio: 'ignore' });
  const url = `postgres://envrun@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.end();
      break;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`Debian PostgreSQL did not start: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url,
    port,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      // Signal the postmaster itself: `runuser` does not forward signals to it.
      const pid = Number(readFileSync(join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 'SIGINT'); // fast shutdown
      await exited;
    },
  };
}
