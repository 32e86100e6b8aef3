import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import { hostTaskQueue } from '../contracts/index.js';
import { stepLogInterceptor } from './logging.js';

// Run from dist/ (compiled, this file is worker.js) the workflows are the compiled workflows/index.js;
// from the sources (tsx, vitest) they are the .ts file.
const WORKFLOWS_FILE = import.meta.url.endsWith('.js') ? '../workflows/index.js' : '../workflows/index.ts';
export const WORKFLOWS_PATH = fileURLToPath(new URL(WORKFLOWS_FILE, import.meta.url));

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
