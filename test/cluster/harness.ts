// envrun on the production engine, on this machine: a Debian PostgreSQL (throwaway folder, free port), the
// Temporal server with SQL persistence and visibility on it (4 history shards; frontend, history, matching
// and worker each its own process), set up by the same scripts docker-compose.yml runs
// (deploy/postgres-init.sql, deploy/setup-schema.sh, deploy/setup-namespace.sh), and two envrun worker
// hosts (`worker/main.ts`, each with its own ENVRUN_DATA_DIR and ENVRUN_HOST_ID) sharing one task queue
// and envrun's own database on the same PostgreSQL.
//
// `startCluster()` returns handles to stop it or to break parts of it (the cluster test suite's faults);
// `npm run cluster` runs one in the foreground until Ctrl+C. One concept, read top to bottom: the start in
// the order it happens. The server's configuration is in temporal-config.ts, process handling in processes.ts.
import { Connection } from '@temporalio/client';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, createWriteStream, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { SEARCH_ATTRIBUTE_REGISTRATIONS } from '../../contracts/index.js';
import { freePort } from '../../lib/net.js';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { findDebianPostgresBin, startDebianPostgres, type DebianPostgres } from '../support/debian-postgres.js';
import { bundleWorkflows } from '../../worker/bundle.js';
import { ensureTemporalCli } from '../../scripts/temporal-cli.js';
import { ensureTemporalServer } from '../../scripts/temporal-server.js';
import { alive, kill9, portOpen, sleep, terminate, track, withPg, type Proc } from './processes.js';
import {
  TEMPORAL_DB_PASSWORD,
  TEMPORAL_DB_USER,
  TEMPORAL_SERVICES,
  freeMembershipPort,
  serverConfig,
  type ServicePorts,
  type TemporalService,
} from './temporal-config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const WORKER_MAIN = join(ROOT, 'worker', 'main.ts');

export { TEMPORAL_SERVICES, type TemporalService };

/** envrun's role and database, as deploy/postgres-init.sql makes them. */
const ENVRUN_DATABASE_PATH = 'envrun:change-me-too@';

export interface ClusterOptions {
  /** Working folder (logs, configs, PostgreSQL, the hosts' data folders); a new temp folder when absent. */
  dir?: string;
  /** The hosts' ENVRUN_TASK_QUEUE (default `envrun`). */
  taskQueue?: string;
  /** envrun worker hosts (default 2). */
  hosts?: number;
  /** A prebuilt workflow bundle for the hosts; bundled into the folder when absent. */
  workflowBundle?: string;
  /** More environment for every worker host. */
  hostEnv?: Record<string, string>;
  /** The hosts' drain time on SIGTERM (ENVRUN_SHUTDOWN_GRACE_MS, default 5000). */
  hostShutdownGraceMs?: number;
  /** Namespace retention (default 1d). */
  retention?: string;
  log?: (line: string) => void;
}

export interface ClusterHost {
  index: number;
  id: string;
  dataDir: string;
  /** The running process's pid, or null while it is down. */
  pid: number | null;
}

export interface ClusterState {
  dir: string;
  temporalAddress: string;
  namespace: string;
  taskQueue: string;
  /** A superuser URL on the cluster's PostgreSQL (database `postgres`). */
  pgAdminUrl: string;
  pgPort: number;
  /** The hosts' DATABASE_URL: envrun's own database on the same PostgreSQL. */
  databaseUrl: string;
  workflowBundle: string;
  hosts: ClusterHost[];
  services: Record<TemporalService, { pid: number | null; grpcPort: number }>;
}

export interface Cluster {
  state(): ClusterState;
  /** kill -9 a worker host. */
  killHost(index: number): Promise<void>;
  /** Starts a (killed or stopped) worker host again; resolves when it polls. */
  startHost(index: number): Promise<void>;
  /** kill -9 one Temporal service process. */
  killService(service: TemporalService): Promise<void>;
  /** Starts a Temporal service process again on its ports; resolves when the cluster answers again. */
  startService(service: TemporalService): Promise<void>;
  /** Stops PostgreSQL (fast shutdown), waits `downMs`, starts it again on the same port and folder. */
  restartPostgres(downMs?: number): Promise<void>;
  /** Resolves when the frontend answers, the namespace is known and history serves every shard. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Runs a deploy/ shell script with `sh`, its output into the log; a failure carries the output's tail. */
async function runScript(script: string, env: Record<string, string>, logFile: string): Promise<void> {
  const out = createWriteStream(logFile, { flags: 'a' });
  try {
    const { stdout, stderr } = await promisify(execFile)('sh', [join(DEPLOY, script)], {
      env,
      maxBuffer: 16 * 1024 * 1024,
    });
    out.write(stdout + stderr);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    out.write(`${e.stdout ?? ''}${e.stderr ?? ''}`);
    const tail = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-8).join('\n');
    throw new Error(`deploy/${script} failed: ${e.message.split('\n')[0]}\n${tail}\n(log: ${logFile})`);
  } finally {
    out.end();
  }
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const log = options.log ?? ((l: string) => console.error(l));
  const say = (l: string) => log(`[cluster] ${l}`);
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'envrun-cluster-'));
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user below it
  const logs = join(dir, 'logs');
  mkdirSync(logs, { recursive: true });
  const namespace = 'default';
  const taskQueue = options.taskQueue ?? 'envrun';
  const hostCount = options.hosts ?? 2;
  const hostGraceMs = options.hostShutdownGraceMs ?? 5000;
  if (!findDebianPostgresBin())
    throw new Error('Debian PostgreSQL not found under /usr/lib/postgresql (apt-get install postgresql)');

  let postgres: DebianPostgres | undefined;
  const services = new Map<TemporalService, Proc>();
  const hosts = new Map<number, Proc>();
  const cleanup = async () => {
    await Promise.all([...hosts.values()].map((h) => terminate(h, hostGraceMs + 5000)));
    for (const s of [...TEMPORAL_SERVICES].reverse()) await terminate(services.get(s), 10_000);
    await postgres?.stop().catch(() => undefined);
  };

  try {
    say(`working folder ${dir} (logs in ${logs})`);
    const pgDir = join(dir, 'pg');
    // All four at once; when one fails, the others are waited for (a PostgreSQL already started is stopped).
    const pgStarted = startDebianPostgres(pgDir).then((p) => (postgres = p));
    const settled = await Promise.allSettled([
      ensureTemporalServer(log),
      ensureTemporalCli(log),
      options.workflowBundle
        ? Promise.resolve(options.workflowBundle)
        : bundleWorkflows(join(dir, 'workflow-bundle.js')),
      pgStarted,
    ]);
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const [binaries, cli, bundle] = settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
      Awaited<ReturnType<typeof ensureTemporalServer>>,
      string,
      string,
    ];
    if (!postgres) throw new Error('PostgreSQL did not start');
    const pgPort = postgres.port;
    const pgAdminUrl = postgres.url;
    // Four server processes, two hosts and the tests' own pools: more than PostgreSQL's default 100.
    await withPg(pgAdminUrl, (c) => c.query('ALTER SYSTEM SET max_connections = 300'));
    await postgres.stop();
    postgres = await startDebianPostgres(pgDir, { port: pgPort });
    say(`PostgreSQL on 127.0.0.1:${pgPort} (${pgDir}), max_connections 300`);

    // The binaries under the names the deploy/ scripts call, whatever their real paths.
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(binaries.sqlTool, join(bin, 'temporal-sql-tool'));
    symlinkSync(cli, join(bin, 'temporal'));
    const scriptEnv = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, HOME: process.env.HOME ?? dir };

    // Roles and databases: Temporal's role (docker-compose.yml's PostgreSQL image makes it as its
    // superuser), then envrun's, with deploy/postgres-init.sql exactly as the image runs it.
    await withPg(pgAdminUrl, async (c) => {
      const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [TEMPORAL_DB_USER]);
      if (exists.rowCount === 0)
        await c.query(`CREATE ROLE ${TEMPORAL_DB_USER} LOGIN CREATEDB PASSWORD '${TEMPORAL_DB_PASSWORD}'`);
    });
    say('psql -f deploy/postgres-init.sql');
    await promisify(execFile)(join(findDebianPostgresBin()!, 'psql'), [
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      '127.0.0.1',
      '-p',
      String(pgPort),
      '-U',
      new URL(pgAdminUrl).username,
      '-d',
      'postgres',
      '-f',
      join(DEPLOY, 'postgres-init.sql'),
    ]);
    say('sh deploy/setup-schema.sh (temporal-sql-tool, postgres12)');
    await runScript(
      'setup-schema.sh',
      {
        ...scriptEnv,
        SQL_PLUGIN: 'postgres12',
        SQL_HOST: '127.0.0.1',
        SQL_PORT: String(pgPort),
        SQL_USER: TEMPORAL_DB_USER,
        SQL_PASSWORD: TEMPORAL_DB_PASSWORD,
      },
      join(logs, 'setup-schema.log'),
    );

    // One configuration folder per service: the same cluster, each with its own metrics port.
    const ports = {} as Record<TemporalService, ServicePorts>;
    const taken = new Set<number>();
    for (const s of TEMPORAL_SERVICES)
      ports[s] = { grpc: await freePort(), membership: await freeMembershipPort(taken), metrics: await freePort() };
    const frontendHttpPort = await freePort();
    for (const s of TEMPORAL_SERVICES) {
      const configDir = join(dir, 'temporal', s);
      mkdirSync(configDir, { recursive: true });
      writeFileSync(
        join(configDir, 'development.yaml'),
        serverConfig({
          pgPort,
          ports,
          frontendHttpPort,
          metricsPort: ports[s].metrics,
          dynamicConfig: join(DEPLOY, 'dynamicconfig.yaml'),
        }),
      );
    }
    const temporalAddress = `127.0.0.1:${ports.frontend.grpc}`;

    const spawnService = (s: TemporalService): Proc => {
      const out = createWriteStream(join(logs, `temporal-${s}.log`), { flags: 'a' });
      const child = spawn(
        binaries.server,
        [
          '--root',
          join(dir, 'temporal'),
          '--config',
          s,
          '--env',
          'development',
          '--allow-no-auth',
          'start',
          '--service',
          s,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child.stdout!.pipe(out);
      child.stderr!.pipe(out);
      const proc = track(child);
      services.set(s, proc);
      return proc;
    };
    const waitPort = async (s: TemporalService, timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const proc = services.get(s);
        if (!alive(proc))
          throw new Error(
            `temporal ${s} exited (code ${services.get(s)?.child.exitCode}); see ${join(logs, `temporal-${s}.log`)}`,
          );
        // The worker service serves no gRPC: its membership port says it is up.
        const port = s === 'worker' ? ports[s].membership : ports[s].grpc;
        if (await portOpen(port)) return;
        if (Date.now() > deadline) throw new Error(`temporal ${s} did not listen on ${port} within 60 s`);
        await sleep(200);
      }
    };

    const waitHealthy = async (timeoutMs = 120_000) => {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        try {
          const conn = await Connection.connect({ address: temporalAddress, connectTimeout: 2000 });
          try {
            await conn.workflowService.getSystemInfo({});
            await conn.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 });
            // Every shard: a lookup of a missing workflow on each routes to its shard's owner.
            for (let i = 0; i < 16; i++) {
              const err = await conn.workflowService
                .describeWorkflowExecution({ namespace, execution: { workflowId: `envrun-cluster-probe-${i}` } })
                .then(
                  () => null,
                  (e: unknown) => e as { code?: number; message?: string },
                );
              if (!err || err.code !== 5 /* NOT_FOUND */ || /namespace/i.test(err.message ?? ''))
                throw new Error(`history not serving: ${err?.message ?? 'unexpected answer'}`);
            }
            await conn.workflowService.describeTaskQueue({ namespace, taskQueue: { name: taskQueue } });
          } finally {
            await conn.close();
          }
          return;
        } catch (err) {
          last = (err as Error).message;
          if (Date.now() > deadline) throw new Error(`Temporal on ${temporalAddress} not healthy: ${last}`);
          await sleep(500);
        }
      }
    };

    // Frontend first (the first process initialises the cluster metadata; two at once race on it).
    spawnService('frontend');
    await waitPort('frontend');
    for (const s of TEMPORAL_SERVICES.slice(1)) spawnService(s);
    await Promise.all(TEMPORAL_SERVICES.slice(1).map((s) => waitPort(s)));
    say(
      `Temporal server (${binaries.server}) on ${temporalAddress}: ` +
        TEMPORAL_SERVICES.map((s) => `${s} :${ports[s].grpc}`).join(', '),
    );

    say('sh deploy/setup-namespace.sh (temporal operator namespace / search-attribute create)');
    await runScript(
      'setup-namespace.sh',
      {
        ...scriptEnv,
        TEMPORAL_ADDRESS: temporalAddress,
        TEMPORAL_NAMESPACE: namespace,
        NAMESPACE_RETENTION: options.retention ?? '1d',
        ENVRUN_SEARCH_ATTRIBUTES: SEARCH_ATTRIBUTE_REGISTRATIONS.map((a) => `${a.name}:${a.type}`).join(' '),
      },
      join(logs, 'setup-namespace.log'),
    );
    await waitHealthy();

    const databaseUrl = `postgres://${ENVRUN_DATABASE_PATH}127.0.0.1:${pgPort}/envrun`;
    const hostInfo = (index: number) => ({
      index,
      id: `host-${index + 1}`,
      dataDir: join(dir, 'hosts', `host-${index + 1}`),
    });
    const startHost = async (index: number) => {
      if (alive(hosts.get(index))) return;
      const { id, dataDir } = hostInfo(index);
      mkdirSync(dataDir, { recursive: true });
      const out = createWriteStream(join(logs, `${id}.log`), { flags: 'a' });
      const child = spawn(process.execPath, ['--import', tsxLoaderUrl(), WORKER_MAIN], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? dataDir,
          TEMPORAL_ADDRESS: temporalAddress,
          TEMPORAL_NAMESPACE: namespace,
          DATABASE_URL: databaseUrl,
          ENVRUN_TASK_QUEUE: taskQueue,
          ENVRUN_DATA_DIR: dataDir,
          ENVRUN_HOST_ID: id,
          ENVRUN_WORKFLOW_BUNDLE: bundle,
          ENVRUN_SHUTDOWN_GRACE_MS: String(hostGraceMs),
          ENVRUN_LOG_LEVEL: 'INFO', // the start line is an info line
          // Host loss is detected within 45 s: deploy/dynamicconfig.yaml has idle workers poll every 20 s.
          ENVRUN_HOST_STALE_MS: '45000',
          ...options.hostEnv,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const proc = track(child);
      hosts.set(index, proc);
      let seen = '';
      const ready = new Promise<void>((res, rej) => {
        child.stdout!.on('data', (chunk: Buffer) => {
          out.write(chunk);
          seen = (seen + chunk.toString()).slice(-4096);
          if (seen.includes('worker on ')) res();
        });
        child.stderr!.on('data', (chunk: Buffer) => out.write(chunk));
        void proc.exited.then(() =>
          rej(
            new Error(
              `envrun worker ${id} ${timedOut ? 'did not start within 120 s' : `exited (${child.exitCode ?? child.signalCode})`}; see ${join(logs, `${id}.log`)}`,
            ),
          ),
        );
      });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, 120_000);
      try {
        await ready;
      } finally {
        clearTimeout(timer);
      }
    };
    await Promise.all(Array.from({ length: hostCount }, (_, i) => startHost(i)));
    say(
      `${hostCount} envrun worker hosts on task queue ${taskQueue}, store ${databaseUrl.replace(/:[^:@/]*@/, ':***@')}`,
    );

    return {
      state: () => ({
        dir,
        temporalAddress,
        namespace,
        taskQueue,
        pgAdminUrl,
        pgPort,
        databaseUrl,
        workflowBundle: bundle,
        hosts: Array.from({ length: hostCount }, (_, i) => {
          const h = hosts.get(i);
          return { ...hostInfo(i), pid: alive(h) ? h.child.pid! : null };
        }),
        services: Object.fromEntries(
          TEMPORAL_SERVICES.map((s) => {
            const p = services.get(s);
            return [s, { pid: alive(p) ? p.child.pid! : null, grpcPort: ports[s].grpc }];
          }),
        ) as ClusterState['services'],
      }),
      killHost: async (index) => {
        say(`kill -9 envrun worker ${hostInfo(index).id} (pid ${hosts.get(index)?.child.pid})`);
        await kill9(hosts.get(index));
      },
      startHost: async (index) => {
        await startHost(index);
        say(`envrun worker ${hostInfo(index).id} started (pid ${hosts.get(index)?.child.pid})`);
      },
      killService: async (s) => {
        say(`kill -9 temporal ${s} (pid ${services.get(s)?.child.pid})`);
        await kill9(services.get(s));
      },
      startService: async (s) => {
        if (!alive(services.get(s))) spawnService(s);
        await waitPort(s);
        await waitHealthy();
        say(`temporal ${s} started again (pid ${services.get(s)?.child.pid}); the cluster answers`);
      },
      restartPostgres: async (downMs = 3000) => {
        say(`stopping PostgreSQL for ${downMs} ms`);
        await postgres?.stop();
        await sleep(downMs);
        postgres = await startDebianPostgres(pgDir, { port: pgPort });
        say('PostgreSQL started again');
      },
      waitHealthy,
      stop: async () => {
        say('stopping');
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2] ? resolve(process.argv[2]) : undefined;
  startCluster({ ...(dir ? { dir } : {}) })
    .then((cluster) => {
      const s = cluster.state();
      console.log(
        [
          `envrun cluster up (folder ${s.dir})`,
          `  TEMPORAL_ADDRESS=${s.temporalAddress}`,
          `  DATABASE_URL=${s.databaseUrl}`,
          `  ENVRUN_TASK_QUEUE=${s.taskQueue}`,
          `  hosts: ${s.hosts.map((h) => `${h.id} pid ${h.pid}`).join(', ')}`,
          'Ctrl+C stops it.',
        ].join('\n'),
      );
      const stop = () => void cluster.stop().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    })
    .catch((err: unknown) => {
      console.error((err as Error).message);
      process.exit(1);
    });
}
