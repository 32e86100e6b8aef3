// The baselines' worker for `npm run bench`, one process per baseline (like envrun's worker, so its CPU and
// memory are its own). The bench transpiles this file and runs it under plain node, as envrun's worker runs
// from dist/. It has the same shape and settings as envrun's (worker/worker.ts): a Worker on the shared queue
// with the workflows (a prebuilt bundle, BENCH_WORKFLOW_BUNDLE) and the activities, and a second Worker with
// the activities only on a host queue; no-op activities. Imports nothing of envrun.
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';

Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: ['SIGINT', 'SIGTERM', 'SIGQUIT'] });
const taskQueue = process.env.ENVRUN_TASK_QUEUE!;
// `out`: the result's payload size; a JSON string's payload is its length + 2.
const activities = {
  noop: async (pad: string, out?: number) => (out === undefined ? pad : 'x'.repeat(Math.max(0, out - 2))),
};
const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS! });
const shared = await Worker.create({
  connection,
  taskQueue,
  workflowBundle: { codePath: process.env.BENCH_WORKFLOW_BUNDLE! },
  activities,
  shutdownGraceTime: 10_000,
  maxConcurrentActivityTaskExecutions: 200,
  maxCachedWorkflows: Number(process.env.ENVRUN_MAX_CACHED_WORKFLOWS),
  maxHeartbeatThrottleInterval: '2s',
});
const host = await Worker.create({
  connection,
  taskQueue: process.env.BENCH_HOST_QUEUE!,
  activities,
  shutdownGraceTime: 10_000,
  maxConcurrentActivityTaskExecutions: 200,
  maxHeartbeatThrottleInterval: '2s',
});
console.log(`[bench] worker on ${taskQueue} and ${process.env.BENCH_HOST_QUEUE}`);
await Promise.all([shared.run(), host.run()]);
await connection.close();
