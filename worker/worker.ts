import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import { hostTaskQueue } from '../contracts/index.js';
import { tsxLoaderUrl } from '../store/embedded.js';
import { stepLogInterceptor } from './logging.js';

// Run from dist/ (compiled, this file is worker.js) the workflows are the compiled workflows/index.js;
// from the sources (tsx, vitest) they are the .ts file.
const COMPILED = import.meta.url.endsWith('.js');
const WORKFLOWS_FILE = COMPILED ? '../workflows/index.js' : '../workflows/index.ts';
export const WORKFLOWS_PATH = fileURLToPath(new URL(WORKFLOWS_FILE, import.meta.url));

/** A workflow bundle made for this process, in a temporary folder: `remove()` once the Worker has read it. */
export interface TemporaryBundle {
  path: string;
  remove(): Promise<void>;
}

/**
 * Bundles the workflows (worker/bundle.ts: webpack) in a child process and returns the bundle's path, for
 * a worker given no prebuilt bundle (ENVRUN_WORKFLOW_BUNDLE). Bundled in the worker's own process instead,
 * webpack and what it allocates stay in the worker's memory for good (about 25 MB of RssAnon when idle:
 * docs/benchmarks.md, "Worker memory"); the Worker reads the finished file once, at Worker.create.
 */
export async function bundleWorkflowsInChildProcess(): Promise<TemporaryBundle> {
  const dir = await mkdtemp(join(tmpdir(), 'envrun-workflow-bundle-'));
  const path = join(dir, 'workflow-bundle.js');
  const bundler = new URL(COMPILED ? './bundle.js' : './bundle.ts', import.meta.url).href;
  const code = `import { bundleWorkflows } from ${JSON.stringify(bundler)};\nawait bundleWorkflows(${JSON.stringify(path)});`;
  try {
    await promisify(execFile)(
      process.execPath,
      [...(COMPILED ? [] : ['--import', tsxLoaderUrl()]), '--input-type=module', '--eval', code],
      { maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(
      `bundling the workflows failed: ${(e.stderr || e.message).trim().split('\n').slice(-20).join('\n')}`,
    );
  }
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface CreateWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
  /** A prebuilt bundle (worker/bundle.ts); bundled from source when absent. */
  workflowBundlePath?: string | undefined;
  shutdownGraceMs?: number;
  maxConcurrentActivities?: number;
  /** Workflow cache size (see worker/config.ts); the SDK's memory-based default when absent. */
  maxCachedWorkflows?: number;
  extra?: Partial<WorkerOptions>;
}

/**
 * The worker of one host: it polls the shared task queue (workflows and every activity) and, when the
 * deps name the host, the host's own queue (activities only: the steps on resources this host holds).
 */
export interface EnvRunWorker {
  shared: Worker;
  host: Worker | null;
  /** Runs both until shutdown; resolves when both have stopped. */
  run(): Promise<void>;
  shutdown(): void;
}

export async function createWorker(options: CreateWorkerOptions): Promise<EnvRunWorker> {
  const shared = await createSharedWorker(options);
  const hostId = options.deps.hostId;
  const host = hostId
    ? await Worker.create({
        connection: options.connection,
        namespace: options.namespace,
        taskQueue: hostTaskQueue(options.taskQueue, hostId),
        activities: createActivities(options.deps),
        shutdownGraceTime: options.shutdownGraceMs ?? 10_000,
        maxConcurrentActivityTaskExecutions: options.maxConcurrentActivities ?? 200,
        maxHeartbeatThrottleInterval: '2s',
        interceptors: {
          activity: [stepLogInterceptor, ...(options.extra?.interceptors?.activity ?? [])],
        },
      })
    : null;
  return {
    shared,
    host,
    async run() {
      await Promise.all([shared.run(), host?.run()]);
    },
    shutdown() {
      shared.shutdown();
      host?.shutdown();
    },
  };
}

async function createSharedWorker(options: CreateWorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue,
    activities: createActivities(options.deps),
    ...(options.workflowBundlePath
      ? { workflowBundle: { codePath: options.workflowBundlePath } }
      : { workflowsPath: WORKFLOWS_PATH }),
    shutdownGraceTime: options.shutdownGraceMs ?? 10_000,
    maxConcurrentActivityTaskExecutions: options.maxConcurrentActivities ?? 200,
    ...(options.maxCachedWorkflows !== undefined ? { maxCachedWorkflows: options.maxCachedWorkflows } : {}),
    // Send heartbeats within ~2 s, so a cancelled run stops its provision command promptly.
    maxHeartbeatThrottleInterval: '2s',
    ...options.extra,
    // Every step's log lines carry the run's ids, and each step logs its start and end (worker/logging.ts).
    interceptors: {
      ...options.extra?.interceptors,
      activity: [stepLogInterceptor, ...(options.extra?.interceptors?.activity ?? [])],
    },
  });
}
