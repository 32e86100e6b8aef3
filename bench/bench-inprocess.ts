// The in_process mode of `npm run bench`: a run's steps (activities/) called one after the other in the bench
// process, with no Temporal, exactly as the run workflow calls them: resolve → acquire → prepare; then
// release. What the steps themselves cost.
import { MockActivityEnvironment } from '@temporalio/testing';
import type { Activities } from '../activities/index.js';

export async function inProcessRun(
  activities: Activities,
  runRequest: { companyId: string; heartbeatRunId: string } & Record<string, unknown>,
): Promise<{ readyMs: number; completeMs: number }> {
  const mock = new MockActivityEnvironment({
    attempt: 1,
    workflowExecution: { workflowId: `inproc/${runRequest.heartbeatRunId}`, runId: 'r' },
  } as never);
  const env = {
    run: <A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A): Promise<R> =>
      mock.run(fn, ...args) as Promise<R>,
  };
  const t = performance.now();
  const { request, environment, realizes } = await env.run(activities.resolveEnvironment, runRequest);
  const lease = await env.run(activities.acquireLease, { request, environmentId: environment.id });
  await env.run(activities.prepareWorkspace, {
    request,
    environmentId: environment.id,
    leaseId: lease.id,
    realizes,
    leaseTtlMs: 3_600_000,
  });
  const readyMs = performance.now() - t;
  const c = performance.now();
  await env.run(activities.releaseLease, {
    companyId: request.companyId,
    heartbeatRunId: request.heartbeatRunId,
    leaseId: lease.id,
    outcome: 'succeeded' as const,
    failureReason: null,
    finalAttempt: 1,
  });
  return { readyMs, completeMs: performance.now() - c };
}
