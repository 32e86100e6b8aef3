// Admission control and single flight in wait mode: runs queue in waiting_for_capacity, in arrival order,
// on a durable gate workflow; never more held leases than allowed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGateQuery } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { until, expectRunError, runRequest, tempWorkspace } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const phase = async (companyId: string, run: string) => (await h.client.getRun(companyId, run))?.phase;

describe('capacity', () => {
  it('maxConcurrentLeases: runs beyond it wait in waiting_for_capacity and proceed in arrival order', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'small',
      driver: 'sandbox',
      config: { provider: 'fake', maxConcurrentLeases: 1 },
    });
    const order: string[] = [];
    const runs = ['r1', 'r2', 'r3'];
    const ready: Record<string, Promise<unknown>> = {};
    for (const run of runs) {
      ready[run] = h.client
        .startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: run, environmentId: env.id }))
        .then(() => order.push(run));
      await until(`${run} queued or ready`, async () =>
        ['waiting_for_capacity', 'ready'].includes((await phase(companyId, run)) ?? ''),
      );
    }
    await ready.r1;
    expect(await phase(companyId, 'r2')).toBe('waiting_for_capacity');
    expect(await phase(companyId, 'r3')).toBe('waiting_for_capacity');
    const gate = await h.client.temporal.workflow.getHandle(`envrun-gate/environment/${env.id}`).query(getGateQuery);
    expect(gate).toEqual({
      capacity: 1,
      holders: [`envrun/${companyId}/r1`],
      queue: [`envrun/${companyId}/r2`, `envrun/${companyId}/r3`],
    });
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(1);

    await h.client.completeRun(companyId, 'r1', { status: 'succeeded' });
    await ready.r2;
    expect(await phase(companyId, 'r3')).toBe('waiting_for_capacity');
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(1);
    await h.client.completeRun(companyId, 'r2', { status: 'succeeded' });
    await ready.r3;
    await h.client.completeRun(companyId, 'r3', { status: 'succeeded' });
    expect(order).toEqual(['r1', 'r2', 'r3']);
  });

  it('a run cancelled while waiting leaves the queue; the next one proceeds', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'small',
      driver: 'sandbox',
      config: { provider: 'fake', maxConcurrentLeases: 1 },
    });
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'holder', environmentId: env.id }));
    const waiting = h.client
      .startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'impatient', environmentId: env.id }))
      .then(
        (r) => r,
        (e: unknown) => e,
      );
    const next = h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'next', environmentId: env.id }),
    );
    await until(
      'both queued',
      async () =>
        (await phase(companyId, 'impatient')) === 'waiting_for_capacity' &&
        (await phase(companyId, 'next')) === 'waiting_for_capacity',
    );
    await h.client.cancelRun(companyId, 'impatient');
    await expectRunError(
      waiting.then((e) => Promise.reject(e)),
      'run_cancelled',
    );
    expect(await h.store.listRunLeases(companyId, 'impatient')).toEqual([]); // it never leased
    await h.client.completeRun(companyId, 'holder', { status: 'succeeded' });
    await next;
    await h.client.completeRun(companyId, 'next', { status: 'succeeded' });
  });

  it('single flight, wait mode: a second run on a leased execution workspace waits instead of failing', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'sf',
      driver: 'sandbox',
      config: { provider: 'fake', singleFlight: 'wait' },
    });
    const cwd = tempWorkspace();
    const ws = await h.admin.createExecutionWorkspace({ companyId, name: 'ws', cwd });
    await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'first', cwd, environmentId: env.id, executionWorkspaceId: ws.id }),
    );
    const second = h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'second', cwd, environmentId: env.id, executionWorkspaceId: ws.id }),
    );
    await until('second waits', async () => (await phase(companyId, 'second')) === 'waiting_for_capacity');
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(1);
    await h.client.completeRun(companyId, 'first', { status: 'succeeded' });
    const result = await second;
    expect(result.lease.executionWorkspaceId).toBe(ws.id);
    await h.client.completeRun(companyId, 'second', { status: 'succeeded' });
  });

  it('a holder whose run was terminated gives its slot back: the next run is admitted', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'one',
      driver: 'sandbox',
      config: { provider: 'fake', maxConcurrentLeases: 1 },
    });
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'holder', environmentId: env.id }));
    // Terminated: no release, no signal to the gate; only the gate's own check can take the slot back.
    await h.client.handle(companyId, 'holder').terminate('operator terminated it');
    const next = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'next', environmentId: env.id }),
    );
    expect(next.lease.status).toBe('active');
    const gate = await h.client.temporal.workflow.getHandle(`envrun-gate/environment/${env.id}`).query(getGateQuery);
    expect(gate.holders).toEqual([`envrun/${companyId}/next`]);
    await h.client.completeRun(companyId, 'next', { status: 'succeeded' });
  });
});
