// The reaper releases what no run will release, and archiving an environment releases its leases first.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ACTIVITY_ACTIONS, runWorkflowId, type EnvironmentLease } from '../../contracts/index.js';
import { REAPER_SCHEDULE_ID } from '../../client/reaper-schedule.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runEnd, runRequest } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const dirOf = (lease: EnvironmentLease) => (lease.metadata!.provider as { root: string }).root;

async function orphanedRun(companyId: string, environmentId: string, run: string): Promise<EnvironmentLease> {
  const result = await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: run, environmentId }));
  // A run whose workflow is terminated (an operator's hard stop) never releases its lease itself.
  await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, run)).terminate('test: orphan the lease');
  return result.lease;
}

it('a sweep releases every active lease whose run is closed or missing; one failure never stops it', async () => {
  const companyId = uniqueId('co');
  const good = await h.admin.createEnvironment({
    companyId,
    name: 'good',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const sticky = await h.admin.createEnvironment({
    companyId,
    name: 'sticky',
    driver: 'sandbox',
    config: { provider: 'fake', faults: { release: { fail: 'always', message: 'API down' } } },
  });
  const failing = await orphanedRun(companyId, sticky.id, 'sticky-run');
  const orphan = await orphanedRun(companyId, good.id, 'terminated-run');
  const ghost = await h.store.insertLease({
    companyId,
    environmentId: good.id,
    executionWorkspaceId: null,
    issueId: null,
    heartbeatRunId: 'never-started',
    leasePolicy: 'ephemeral',
    provider: 'fake',
    metadata: null,
    expiresAt: null,
  });
  const alive = await h.client.startRunAndWaitReady(
    runRequest({ companyId, heartbeatRunId: 'alive', environmentId: good.id }),
  );

  const reaped = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
  const byRun = Object.fromEntries(reaped.map((r) => [r.heartbeatRunId, r]));
  expect(Object.keys(byRun).sort()).toEqual(['never-started', 'sticky-run', 'terminated-run']);
  expect(byRun['terminated-run']).toMatchObject({
    reason: 'reaped: run workflow is terminated',
    cleanupStatus: 'success',
  });
  expect(byRun['never-started']).toMatchObject({ reason: 'reaped: run workflow not found', leaseId: ghost.id });
  expect(byRun['sticky-run']).toMatchObject({ cleanupStatus: 'failed', error: 'API down', leaseId: failing.id });
  expect(existsSync(dirOf(orphan))).toBe(false);
  expect((await h.store.listLeases(companyId, 'active')).map((l) => l.id)).toEqual([alive.lease.id]);
  const logged = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseReleased });
  expect(logged.filter((l) => (l.details as { reason?: string }).reason?.startsWith('reaped'))).toHaveLength(3);
  // A second sweep only tries the failed cleanup again (attempts keep counting), and it still fails.
  const again = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
  expect(again).toMatchObject([
    {
      leaseId: failing.id,
      cleanupStatus: 'failed',
      error: 'API down',
      reason: 'cleanup retried: failed after the run ended',
    },
  ]);
  expect((await h.store.getLease(companyId, failing.id))!.metadata).toMatchObject({
    cleanupAttempts: 2,
    cleanupError: 'API down',
  });
  // Once the provider works again, the next sweep frees the resource; the lease keeps its status.
  await h.admin.updateEnvironment(companyId, sticky.id, { config: { provider: 'fake' } });
  const fixed = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
  expect(fixed).toMatchObject([{ leaseId: failing.id, cleanupStatus: 'success', error: null }]);
  expect(existsSync(dirOf(failing))).toBe(false);
  expect(await h.store.getLease(companyId, failing.id)).toMatchObject({
    status: 'released',
    cleanupStatus: 'success',
    failureReason: 'reaped: run workflow is terminated',
  });
  expect(await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseCleanedUp })).toHaveLength(1);
  // Nothing left to do: a further sweep touches nothing of this company.
  expect((await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId)).toEqual([]);
  await h.client.completeRun(companyId, 'alive', { status: 'succeeded' });
});

it('archiving an environment releases its leases through the provider before it returns', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'old',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const running = await h.client.startRunAndWaitReady(
    runRequest({ companyId, heartbeatRunId: 'running', environmentId: env.id }),
  );
  const orphan = await orphanedRun(companyId, env.id, 'orphan');
  const archived = await h.admin.archiveEnvironment(companyId, env.id);
  expect(archived.status).toBe('archived');
  const leases = await h.store.listLeases(companyId);
  expect(leases.map((l) => [l.heartbeatRunId, l.status, l.cleanupStatus]).sort()).toEqual([
    ['orphan', 'released', 'success'],
    ['running', 'released', 'success'],
  ]);
  for (const l of [running.lease, orphan]) expect(existsSync(dirOf(l))).toBe(false);
  expect(await runEnd(h, companyId, 'running')).toMatchObject({ name: 'WorkflowFailedError' }); // cancelled
});

it('the reaper schedule is installed once', async () => {
  try {
    expect(await h.client.installReaper('7m')).toBe(true);
    expect(await h.client.installReaper('7m')).toBe(false);
    const desc = await h.client.temporal.schedule.getHandle(REAPER_SCHEDULE_ID).describe();
    expect(desc.action).toMatchObject({ type: 'startWorkflow', workflowType: 'reaper', taskQueue: h.taskQueue });
    expect(desc.spec.intervals?.[0]?.every).toBe(7 * 60_000);
  } finally {
    await h.client.temporal.schedule
      .getHandle(REAPER_SCHEDULE_ID)
      .delete()
      .catch(() => undefined);
  }
});

it("a sweep never releases another deployment's lease sharing the database", async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'e',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const theirs = await orphanedRun(companyId, env.id, 'theirs');
  // The same database, another deployment: its task queue differs from this reaper's.
  await h.store.mergeLeaseMetadata(theirs.id, {
    deployment: { namespace: 'default', taskQueue: 'another-deployment' },
  });
  const ours = await orphanedRun(companyId, env.id, 'ours');
  const reaped = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
  expect(reaped.map((r) => r.leaseId)).toEqual([ours.id]);
  expect(await h.store.getLease(companyId, theirs.id)).toMatchObject({ status: 'active' });
  expect(existsSync(dirOf(theirs))).toBe(true);
});
