// A run held for weeks: every renewal adds to its history, so the run continues as new before the history
// grows past its threshold. Across the chain it stays ready with one lease; renew, exec and complete keep
// working; each run of the chain stays under the threshold.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runWorkflowId } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

interface ChainRun {
  runId: string;
  events: number;
  /** Updates (renewals, exec) the run accepted after its history passed `threshold` events. */
  acceptedPast: number;
}

/** Every run of the workflow's chain, first to last, with its history length. */
async function chainOf(workflowId: string, threshold = Infinity): Promise<ChainRun[]> {
  const described = await h.client.temporal.workflow.getHandle(workflowId).describe();
  const chain: ChainRun[] = [];
  let runId = described.raw.workflowExecutionInfo?.firstRunId ?? undefined;
  while (runId) {
    const { events } = await h.client.temporal.workflow.getHandle(workflowId, runId).fetchHistory();
    const acceptedPast = (events ?? []).filter(
      (e) => Number(e.eventId) > threshold && e.workflowExecutionUpdateAcceptedEventAttributes,
    ).length;
    chain.push({ runId, events: events?.length ?? 0, acceptedPast });
    // Each run's last event names the next run of the chain.
    runId = events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return chain;
}

it('a thousand renewals: the run continues as new, stays ready on one lease, and completes', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const threshold = 300;
  const req = runRequest({ companyId, environmentId: env.id, continueAfterEvents: threshold });
  const ready = await h.client.startRunAndWaitReady(req);
  for (let i = 0; i < 1000; i++) {
    const state = await h.client.renewRun(companyId, req.heartbeatRunId);
    expect(state.phase).toBe('ready');
    expect(state.leaseId).toBe(ready.lease.id);
  }
  // Still the same run to the client: its target, its lease, and a command in its sandbox.
  expect((await h.client.waitReady(companyId, req.heartbeatRunId)).lease.id).toBe(ready.lease.id);
  const out = await h.client.exec(companyId, req.heartbeatRunId, { command: 'pwd' });
  expect(out.exitCode).toBe(0);

  const chain = await chainOf(runWorkflowId(companyId, req.heartbeatRunId), threshold);
  expect(chain.length).toBeGreaterThan(3);
  // Each run stops at the first renewal its workflow task sees past the threshold: at most two accepted
  // with event ids past it (the one whose task started just below it, then that one). A renewal adds about
  // ten events, a few more when a slow machine makes a workflow task heartbeat: the length is bounded loosely.
  for (const run of chain) expect(run.events, run.runId).toBeLessThan(threshold + 40);
  for (const run of chain.slice(0, -1)) expect(run.acceptedPast, run.runId).toBeLessThanOrEqual(2);

  const done = await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  expect(done.releasedLeases).toMatchObject([{ id: ready.lease.id, status: 'released', cleanupStatus: 'success' }]);
  expect(await h.store.listRunLeases(companyId, req.heartbeatRunId)).toHaveLength(1);
}, 240_000);

it('a run does not continue as new while a command runs: release can still end it; it continues once it ended', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const threshold = 100;
  const req = runRequest({ companyId, environmentId: env.id, continueAfterEvents: threshold });
  await h.client.startRunAndWaitReady(req);
  const workflowId = runWorkflowId(companyId, req.heartbeatRunId);
  const script = 'while [ ! -e done ]; do sleep 0.1; done';
  await h.client.exec(companyId, req.heartbeatRunId, {
    command: 'sh',
    args: ['-c', script],
    commandId: 'w',
    wait: false,
  });
  for (let i = 0; i < 40; i++) await h.client.renewRun(companyId, req.heartbeatRunId);
  const held = await chainOf(workflowId);
  expect(held).toHaveLength(1); // past the threshold, and still the one run that started the command
  expect(held[0]!.events).toBeGreaterThan(threshold);
  expect(await h.admin.getCommand(companyId, req.heartbeatRunId, 'w')).toMatchObject({ status: 'running' });
  await h.client.exec(companyId, req.heartbeatRunId, { command: 'touch', args: ['done'] });
  expect(await h.client.exec(companyId, req.heartbeatRunId, { command: 'true', commandId: 'w' })).toMatchObject({
    status: 'exited',
    exitCode: 0,
  });
  await h.client.renewRun(companyId, req.heartbeatRunId);
  expect((await chainOf(workflowId)).length).toBe(2); // the command ended: the next renewal continues as new
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
}, 120_000);
