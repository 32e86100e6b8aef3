// The in_process mode of `npm run bench`: a run's step functions (activities/) called one after the other in
// the bench process, with no Temporal: what the steps themselves cost. The steps are reached by name and
// called with inputs that carry what either shape of the run needs (the run workflow is being reshaped, and
// a bench must not break with it): resolve → acquire → log → prepare (one step) or realize → persist →
// target → log; then release. A step missing or refusing its input fails the mode, which the bench reports.
import { MockActivityEnvironment } from '@temporalio/testing';
import { ACTIVITY_ACTIONS, leaseEventRow, type ActivityAction } from '../contracts/index.js';

// Inputs and outputs are `any`: they follow whichever shape activities/ has.
type Step = (input: any) => Promise<any>;

export async function inProcessRun(
  activities: object,
  runRequest: { companyId: string; heartbeatRunId: string } & Record<string, unknown>,
): Promise<{ readyMs: number; completeMs: number }> {
  const steps = activities as Record<string, Step | undefined>;
  const env = new MockActivityEnvironment({
    attempt: 1,
    workflowExecution: { workflowId: `inproc/${runRequest.heartbeatRunId}`, runId: 'r' },
  } as never);
  const call = (name: string, input: unknown): Promise<any> => {
    const fn = steps[name];
    if (!fn) throw new Error(`in_process: no step ${name} in activities/`);
    return env.run(fn, input) as Promise<any>;
  };
  const t = performance.now();
  const resolved = await call('resolveEnvironment', runRequest);
  const { request, environment } = resolved;
  const lease = await call('acquireLease', { request, environment, environmentId: environment.id });
  const logged = (action: ActivityAction) =>
    leaseEventRow({ actor: 'run', scope: `inproc/${request.heartbeatRunId}`, action, lease, details: {} });
  await call('logActivity', logged(ACTIVITY_ACTIONS.leaseAcquired));
  if (steps.prepareWorkspace) {
    await call('prepareWorkspace', {
      request,
      environmentId: environment.id,
      leaseId: lease.id,
      realizes: resolved.realizes ?? true,
      leaseTtlMs: 3_600_000,
    });
  } else {
    const realized = await call('realizeWorkspace', {
      request,
      environment,
      lease,
      executionWorkspace: resolved.executionWorkspace ?? null,
    });
    const stored = await call('persistMetadata', {
      environment,
      lease,
      executionWorkspaceId: null,
      realizationRequest: realized.realizationRequest,
      record: realized.record,
      leaseTtlMs: 3_600_000,
    });
    await call('resolveTarget', { environment, lease: stored.lease, record: realized.record });
    await call('logActivity', logged(ACTIVITY_ACTIONS.workspaceRealized));
  }
  const readyMs = performance.now() - t;
  const c = performance.now();
  await call('releaseLease', {
    companyId: request.companyId,
    heartbeatRunId: request.heartbeatRunId,
    leaseId: lease.id,
    outcome: 'succeeded',
    failureReason: null,
    finalAttempt: 1,
  });
  await call('logActivity', logged(ACTIVITY_ACTIONS.leaseReleased));
  return { readyMs, completeMs: performance.now() - c };
}
