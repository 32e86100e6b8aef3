// The bare baseline's worker for `npm run bench`, in its own process (like envrun's worker) so its RSS is
// measured alone: the same Worker settings as envrun's (worker/worker.ts), no-op activities.
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { fileURLToPath } from 'node:url';

Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: ['SIGINT', 'SIGTERM'] });
const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS! });
const { code } = await bundleWorkflowCode({
  workflowsPath: fileURLToPath(new URL('./bench-workflows.ts', import.meta.url)),
  logger: new DefaultLogger('WARN'),
});
const worker = await Worker.create({
  connection,
  taskQueue: process.env.ENVRUN_TASK_QUEUE!,
  workflowBundle: { code },
  activities: { noop: async (step: string) => step },
  maxConcurrentActivityTaskExecutions: 200,
  maxHeartbeatThrottleInterval: '2s',
  maxCachedWorkflows: Number(process.env.ENVRUN_MAX_CACHED_WORKFLOWS),
});
console.log('[envrun] worker on (bare baseline)');
await worker.run();
await connection.close();
