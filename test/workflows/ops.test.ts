// Ops: a failed realization waits for an operator instead of failing blind; held leases are bounded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIVITY_ACTIONS, retryRealizationSignal, runWorkflowId, type RunState } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { until, expectRunError, runEnd, runRequest } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const phaseOf = async (companyId: string, run: string) => (await h.client.getRun(companyId, run))?.phase;

describe('operator retry', () => {
  it('fix then retry: runs wait in awaiting_retry, the fault is removed, a bulk retry makes them ready', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'broken',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always', message: 'image pull failed' } } },
    });
    const runs = ['a', 'b'].map((r) =>
      runRequest({ companyId, heartbeatRunId: r, environmentId: env.id, awaitRetryMs: 120_000 }),
    );
    const ready = runs.map((r) => h.client.startRunAndWaitReady(r));
    for (const r of runs)
      await until(
        `${r.heartbeatRunId} awaiting retry`,
        async () => (await phaseOf(companyId, r.heartbeatRunId)) === 'awaiting_retry',
      );
    const state = (await h.client.getRun(companyId, 'a')) as RunState;
    expect(state.lastError).toMatchObject({
      code: 'workspace_realization_failed',
      message: 'image pull failed',
      environmentId: env.id,
    });
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(2); // the lease is still held
    // Visible in visibility by phase and error code, without touching the database.
    const listed = await until('visibility', async () => {
      const l = await h.client.listRuns({ phase: 'awaiting_retry', environmentId: env.id });
      return l.length === 2 ? l : null;
    });
    expect(listed.map((r) => r.errorCode)).toEqual(['workspace_realization_failed', 'workspace_realization_failed']);
    // A retry before the fix fails again and comes back to awaiting_retry.
    await h.client.retryRealization(companyId, 'a');
    await until(
      'a awaiting again',
      async () =>
        (await h.client.getRun(companyId, 'a'))?.operatorRetries === 1 &&
        (await phaseOf(companyId, 'a')) === 'awaiting_retry',
    );

    await h.admin.updateEnvironment(companyId, env.id, { config: { provider: 'fake' } });
    // The bulk retry finds runs through visibility, which trails the workflow by a moment.
    await until(
      'visibility lists both awaiting again',
      async () => (await h.client.listRuns({ phase: 'awaiting_retry', environmentId: env.id })).length === 2,
    );
    const retried = await h.client.retryAwaiting({ environmentId: env.id });
    expect(retried.map((r) => r.heartbeatRunId).sort()).toEqual(['a', 'b']);
    const results = await Promise.all(ready);
    expect(results.map((r) => r.executionTarget?.kind)).toEqual(['remote', 'remote']);
    for (const r of runs) await h.client.completeRun(companyId, r.heartbeatRunId, { status: 'succeeded' });
    await until(
      'error code cleared',
      async () => (await h.client.listRuns({ companyId, errorCode: 'workspace_realization_failed' })).length === 0,
    );
  });

  it('the retry update is refused unless the run awaits retry; the signal works too', async () => {
    const companyId = uniqueId('co');
    const ok = runRequest({ companyId });
    await h.client.startRunAndWaitReady(ok);
    await expect(h.client.retryRealization(companyId, ok.heartbeatRunId)).rejects.toThrow(
      'the run is ready, not awaiting_retry',
    );
    await h.client.completeRun(companyId, ok.heartbeatRunId, { status: 'succeeded' });

    const env = await h.admin.createEnvironment({
      companyId,
      name: 'twice',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 3 } } },
    });
    const req = runRequest({ companyId, environmentId: env.id, awaitRetryMs: 120_000 });
    const ready = h.client.startRunAndWaitReady(req).then(
      (r) => r,
      (e: unknown) => e,
    ); // settles when cancelled below
    await until('awaiting retry', async () => (await phaseOf(companyId, req.heartbeatRunId)) === 'awaiting_retry');
    // Attempts 1-3 failed; the operator's retry is attempt 1 of a fresh policy, so it would fail again:
    // the fault counts activity attempts, and the signal (the UI's action) starts the next round.
    await h.client.temporal.workflow
      .getHandle(runWorkflowId(companyId, req.heartbeatRunId))
      .signal(retryRealizationSignal);
    await until(
      'retried',
      async () => ((await h.client.getRun(companyId, req.heartbeatRunId))?.operatorRetries ?? 0) >= 1,
    );
    await h.client.cancelRun(companyId, req.heartbeatRunId);
    await expectRunError(
      ready.then((e) => Promise.reject(e)),
      'run_cancelled',
    );
    expect((await h.store.listRunLeases(companyId, req.heartbeatRunId))[0]!.status).toBe('released');
  });

  it('with no decision before the deadline the run ends workspace_realization_failed and releases its lease', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'dead',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always' } } },
    });
    const req = runRequest({ companyId, environmentId: env.id, awaitRetryMs: 1500 });
    await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    await runEnd(h, companyId, req.heartbeatRunId);
    expect((await h.store.listRunLeases(companyId, req.heartbeatRunId))[0]).toMatchObject({ status: 'failed' });
  });
});

describe('readiness statistics', () => {
  it('stats gives p50/p95 of requested→ready per driver/provider from visibility', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'stats',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    for (let i = 0; i < 3; i++) {
      const req = runRequest({ companyId, environmentId: env.id });
      await h.client.startRunAndWaitReady(req);
      await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    }
    const fake = await until('stats', async () => {
      // This company's runs only: the suite's other runs on the shared server (a killed worker's, say) differ.
      const s = (await h.client.stats(3600_000, { companyId })).find(
        (g) => g.driver === 'sandbox' && g.provider === 'fake',
      );
      return s && s.runs >= 3 ? s : null;
    });
    expect(fake.runs).toBe(3);
    expect(fake.p50Ms).toBeGreaterThan(0);
    expect(fake.p95Ms).toBeGreaterThanOrEqual(fake.p50Ms);
    expect(fake.p95Ms).toBeLessThan(30_000);
  });
});

describe('bounded leases', () => {
  it('every lease has expiresAt; a run not renewed expires, its lease `expired`, environment.lease_expired logged', async () => {
    const req = runRequest({ leaseTtlMs: 1500 });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.lease.expiresAt).not.toBeNull();
    expect(Date.parse(result.lease.expiresAt!) - Date.now()).toBeLessThanOrEqual(1500);
    expect(await runEnd(h, req.companyId, req.heartbeatRunId)).toMatchObject({ status: 'expired' });
    const [lease] = await h.store.listRunLeases(req.companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'expired', cleanupStatus: 'success' });
    const log = await h.store.listActivity(req.companyId, {
      runId: req.heartbeatRunId,
      action: ACTIVITY_ACTIONS.leaseExpired,
    });
    expect(log).toHaveLength(1);
  });

  it('renewing keeps the run ready past its TTL', async () => {
    const req = runRequest({ leaseTtlMs: 1500 });
    const result = await h.client.startRunAndWaitReady(req);
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 800));
      const state = await h.client.renewRun(req.companyId, req.heartbeatRunId);
      expect(Date.parse(state.expiresAt!)).toBeGreaterThan(Date.parse(result.lease.expiresAt!));
    }
    expect(await phaseOf(req.companyId, req.heartbeatRunId)).toBe('ready'); // 2.4 s > TTL, still held
    const [lease] = await h.store.listRunLeases(req.companyId, req.heartbeatRunId);
    expect(Date.parse(lease!.expiresAt!)).toBeGreaterThan(Date.now());
    const done = await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(done.releasedLeases[0]!.status).toBe('released');
  });
});
