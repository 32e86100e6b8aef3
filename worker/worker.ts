import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import { createActivities, type ActivityDeps } from '../activities/index.js';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

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
  });
}
