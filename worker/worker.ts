import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import { createActivities, type ActivityDeps } from '../activities/index.js';
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
  /** A prebuilt bundle (scripts/bundle-workflows.ts); bundled from source when absent. */
  workflowBundlePath?: string | undefined;
  shutdownGraceMs?: number;
  maxConcurrentActivities?: number;
  /** Workflow cache size (see worker/config.ts); the SDK's memory-based default when absent. */
  maxCachedWorkflows?: number;
  extra?: Partial<WorkerOptions>;
}

export async function createWorker(options: CreateWorkerOptions): Promise<Worker> {
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
