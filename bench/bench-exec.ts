// `npm run bench:exec` (and the last part of `npm run bench`): what a command costs. The round trip of a tiny
// command (`true`) through the run's exec, the time from a process writing a line to a streaming reader
// getting it (c=1 and 50 concurrent commands), and 100 MB of output through one command to the CLI, with the
// worker's RSS growth. One dev server, one embedded PostgreSQL, envrun's real worker from dist/; several
// interleaved repetitions, median and spread. Merges its keys into bench/results/latest.json's summary.
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createDatabaseIfMissing, openDatabase } from '../store/db.js';
import { ensureEmbeddedStore, readStoreInfo, stopEmbeddedStore, tsxLoaderUrl } from '../store/embedded.js';
import { Store } from '../store/store.js';
import { EnvRunAdmin } from '../client/admin.js';
import { EnvRunClient } from '../client/runs.js';
import { bundleWorkflows } from '../worker/bundle.js';
import { createProviders } from '../drivers/providers/load.js';
import { createDrivers } from '../drivers/registry.js';
import { startDevServer } from '../scripts/dev-server.js';
import { startWorkerProcess, writeGcPreload, type BenchProcess } from './bench-proc.js';
import { execParts, type ExecBenchContext } from './bench-exec-parts.js';
import { REPS, ROOT, log, runRequest } from './bench-modes.js';

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-bench-exec-'));
  chmodSync(tmp, 0o755);
  const stoppers: Array<() => Promise<unknown>> = [];
  const token = Date.now().toString(36);
  if (process.env.BENCH_BUILD !== '0') {
    const built = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) throw new Error(`npm run build failed (${built.status})`);
  }
  try {
    const server = await startDevServer({ headless: true, logFile: join(tmp, 'temporal.log') });
    stoppers.push(() => server.stop());
    const storeDir = join(tmp, 'store');
    const adminUrl = await ensureEmbeddedStore(storeDir);
    stoppers.push(() => stopEmbeddedStore(storeDir));
    await createDatabaseIfMissing(adminUrl, 'bench');
    const url = new URL(adminUrl);
    url.pathname = '/bench';
    const database = await openDatabase(url.toString(), 20);
    stoppers.push(() => database.close());
    const store = new Store(database.db);
    const dataDir = join(tmp, 'data');
    const bundle = await bundleWorkflows(join(tmp, 'workflow-bundle.js'));
    const preload = pathToFileURL(writeGcPreload(tmp)).href;
    const worker: BenchProcess = await startWorkerProcess({
      name: 'envrun-worker',
      script: join(ROOT, existsSync(join(ROOT, 'dist/worker/main.js')) ? 'dist/worker/main.js' : 'worker/main.ts'),
      nodeArgs: [
        ...(existsSync(join(ROOT, 'dist/worker/main.js')) ? [] : ['--import', tsxLoaderUrl()]),
        // BENCH_PROFILE=<dir>: the worker's CPU profile (`npx tsx bench/profile-summary.ts <dir>`).
        ...(process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : []),
      ],
      env: {
        TEMPORAL_ADDRESS: server.address,
        DATABASE_URL: url.toString(),
        ENVRUN_TASK_QUEUE: 'bench-exec',
        ENVRUN_HOST_ID: 'bench-host',
        ENVRUN_DATA_DIR: dataDir,
        ENVRUN_WORKFLOW_BUNDLE: bundle,
        ENVRUN_REAPER_EVERY: 'off',
      },
      logFile: join(tmp, 'worker.log'),
      preload,
    });
    stoppers.push(() => worker.stop());
    const connection = await Connection.connect({ address: server.address });
    stoppers.push(() => connection.close());
    const client = new EnvRunClient({ client: new Client({ connection }), taskQueue: 'bench-exec' });
    const drivers = createDrivers(createProviders({ dataDir }));
    const admin = new EnvRunAdmin({ runs: client, store, drivers });
    const env = await admin.createEnvironment({
      companyId: 'bench',
      name: 'fake',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const cwd = mkdtempSync(join(tmpdir(), 'bench-exec-ws-'));
    stoppers.push(async () => rmSync(cwd, { recursive: true, force: true }));
    const ctx: ExecBenchContext = {
      client,
      admin,
      worker,
      reps: REPS,
      token,
      log,
      databaseUrl: url.toString(),
      temporalAddress: server.address,
      serverPid: server.process.pid!,
      postgresPid: readStoreInfo(storeDir)!.pid,
      taskQueue: 'bench-exec',
      cli: join(ROOT, 'bin/envrun.mjs'),
      async readyRun(name) {
        const id = `${token}-${name}`;
        await client.startRunAndWaitReady(runRequest(id, env.id, cwd));
        return id;
      },
    };
    const { summary, targets } = await execParts(ctx);
    log(`\n[bench:exec] summary ${JSON.stringify(summary)}`);
    const latest = join(ROOT, 'bench/results/latest.json');
    if (existsSync(latest) && process.env.BENCH_EXEC_WRITE !== '0') {
      const result = JSON.parse(readFileSync(latest, 'utf8')) as {
        summary: Record<string, unknown>;
        targets?: Array<{ target: string }>;
      };
      result.summary = { ...result.summary, ...summary };
      // This part's targets (all named `exec …`) replace those of an earlier bench:exec run.
      result.targets = [...(result.targets ?? []).filter((t) => !t.target.startsWith('exec ')), ...targets];
      writeFileSync(latest, JSON.stringify(result, null, 2) + '\n');
      log(`[bench:exec] merged into ${latest}`);
    }
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch((err) => log(`[bench:exec] stop: ${err}`));
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
