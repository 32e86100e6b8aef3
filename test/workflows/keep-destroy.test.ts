// Release, keep and destroy: keep is decided by the lease policy (or the control plane's disposition), and a
// kept provider resource (reuse, retention) is destroyed with the provider's destroyLease once nothing will
// use it again: its environment archived, its retention ended, or the reaper finding it orphaned.
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ACTIVITY_ACTIONS, runWorkflowId, type EnvironmentLease } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runEnd, runRequest, tempWorkspace } from '../support/runs.js';

// A contract version 2 provider module that records every call (outside the repository, as a user's is).
const MODULE = join(mkdtempSync(join(tmpdir(), 'envrun-recorder-')), 'recorder.mjs');
copyFileSync(fileURLToPath(new URL('../fixtures/providers/recorder.mjs', import.meta.url)), MODULE);

let h: Harness;
beforeAll(async () => {
  h = await createHarness({ providerModules: [MODULE] });
});
afterAll(async () => {
  await h?.close();
});

async function sandbox(companyId: string, config: Record<string, unknown> = {}) {
  return h.admin.createEnvironment({
    companyId,
    name: uniqueId('sbx'),
    driver: 'sandbox',
    config: { provider: 'fake', ...config },
  });
}

const dirOf = (lease: EnvironmentLease) => (lease.metadata!.provider as { root: string }).root;

async function stored(companyId: string, lease: EnvironmentLease): Promise<EnvironmentLease> {
  return (await h.store.getLease(companyId, lease.id))!;
}

/** The recorder's calls of one run, in order. */
function recorded(heartbeatRunId: string): Array<Record<string, unknown> & { op: string }> {
  const file = join(h.dataDir, 'recorder', 'calls.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown> & { op: string })
    .filter((c) => c.heartbeatRunId === heartbeatRunId);
}

describe('attacks', () => {
  it('a reused sandbox is destroyed once its environment is archived', async () => {
    const companyId = uniqueId('co');
    const byPolicy = await sandbox(companyId);
    const byConfig = await sandbox(companyId, { reuseLease: true });
    const leases: EnvironmentLease[] = [];
    for (const [run, env, leasePolicy] of [
      ['p1', byPolicy, 'reuse_by_environment'],
      ['c1', byConfig, undefined],
    ] as const) {
      const ready = await h.client.startRunAndWaitReady(
        runRequest({ companyId, heartbeatRunId: run, environmentId: env.id, ...(leasePolicy ? { leasePolicy } : {}) }),
      );
      await h.client.completeRun(companyId, run, { status: 'succeeded' });
      expect(existsSync(dirOf(ready.lease))).toBe(true); // kept for the next run
      leases.push(ready.lease);
    }
    await h.admin.archiveEnvironment(companyId, byPolicy.id);
    await h.admin.archiveEnvironment(companyId, byConfig.id);
    for (const lease of leases) expect(existsSync(dirOf(lease)), dirOf(lease)).toBe(false);
  });

  it('an ephemeral lease on an environment whose config reuses leases gets its own resource, destroyed at release', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId, { reuseLease: true });
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'e1', environmentId: env.id, leasePolicy: 'ephemeral' }),
    );
    await h.client.completeRun(companyId, 'e1', { status: 'succeeded' });
    expect(existsSync(dirOf(ready.lease))).toBe(false);
  });
});

describe('keep by the lease policy', () => {
  it("an environment's reuseLease is its default policy, reuse_by_environment: the next run resumes the resource", async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId, { reuseLease: true });
    const first = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r1', environmentId: env.id }),
    );
    expect(first.lease.leasePolicy).toBe('reuse_by_environment');
    await h.client.completeRun(companyId, 'r1', { status: 'succeeded' });
    expect(await stored(companyId, first.lease)).toMatchObject({
      status: 'released',
      cleanupStatus: 'success',
      metadata: { kept: true, termination: { providerLeaseId: `fake://env-${env.id}`, state: 'stopped' } },
    });
    const second = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r2', environmentId: env.id }),
    );
    expect(second.lease.providerLeaseId).toBe(first.lease.providerLeaseId);
    await h.client.completeRun(companyId, 'r2', { status: 'succeeded' });
  });
});

describe('archive', () => {
  it('destroys each kept resource once, records it on every lease that held it, and logs it', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const reused: EnvironmentLease[] = [];
    for (const run of ['r1', 'r2']) {
      const ready = await h.client.startRunAndWaitReady(
        runRequest({ companyId, heartbeatRunId: run, environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
      );
      await h.client.completeRun(companyId, run, { status: 'succeeded' });
      reused.push(ready.lease);
    }
    const retained = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'bad', environmentId: env.id, leasePolicy: 'retain_on_failure' }),
    );
    await h.client.completeRun(companyId, 'bad', { status: 'failed', failureReason: 'tests red' });
    // A run still holding the reused resource is cancelled by the archive and releases it first.
    const running = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r3', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    expect(existsSync(dirOf(reused[0]!))).toBe(true);
    expect(existsSync(dirOf(retained.lease))).toBe(true);

    const archived = await h.admin.archiveEnvironment(companyId, env.id);
    expect(archived).toMatchObject({
      status: 'archived',
      keptResources: { destroyed: 2, failed: 0, skippedLive: 0, failures: [] },
    });
    expect(await runEnd(h, companyId, 'r3')).toMatchObject({ name: 'WorkflowFailedError' }); // cancelled
    expect(existsSync(dirOf(reused[0]!))).toBe(false);
    expect(existsSync(dirOf(retained.lease))).toBe(false);
    for (const lease of [...reused, running.lease]) {
      expect(await stored(companyId, lease)).toMatchObject({
        status: 'released',
        cleanupStatus: 'success',
        metadata: {
          kept: false,
          destroyed: { reason: `environment ${env.id} archived` },
          termination: { providerLeaseId: `fake://env-${env.id}`, state: 'destroyed' },
        },
      });
    }
    // Its retention ended with its environment: released, not retained any more.
    const wasRetained = await stored(companyId, retained.lease);
    expect(wasRetained).toMatchObject({ status: 'released', cleanupStatus: 'success', failureReason: 'tests red' });
    expect(wasRetained.releasedAt).not.toBeNull();
    const logged = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseDestroyed });
    expect(logged).toHaveLength(2);
    expect(logged.find((l) => l.entityId === running.lease.id)).toMatchObject({
      actorType: 'operator',
      details: { providerLeaseId: `fake://env-${env.id}`, leases: 3, cancelActiveWork: true },
    });
    // Nothing is left: archiving again destroys nothing.
    expect((await h.admin.archiveEnvironment(companyId, env.id)).keptResources).toMatchObject({
      destroyed: 0,
      failed: 0,
    });
  });

  it('skips a resource a live run of another environment holds, which the reaper destroys once it is free', async () => {
    const companyId = uniqueId('co');
    const [a, b] = [await sandbox(companyId), await sandbox(companyId)];
    const cwd = tempWorkspace();
    const ws = await h.admin.createExecutionWorkspace({ companyId, name: 'w', cwd });
    const onWs = (run: string, environmentId: string) =>
      runRequest({
        companyId,
        heartbeatRunId: run,
        cwd,
        environmentId,
        executionWorkspaceId: ws.id,
        leasePolicy: 'reuse_by_execution_workspace',
      });
    const first = await h.client.startRunAndWaitReady(onWs('a1', a.id));
    await h.client.completeRun(companyId, 'a1', { status: 'succeeded' });
    const live = await h.client.startRunAndWaitReady(onWs('b1', b.id));
    expect(live.lease.providerLeaseId).toBe(first.lease.providerLeaseId);

    const archived = await h.admin.archiveEnvironment(companyId, a.id);
    expect(archived.keptResources).toMatchObject({ destroyed: 0, failed: 0, skippedLive: 1 });
    expect(existsSync(dirOf(first.lease))).toBe(true);
    expect(await h.client.exec(companyId, 'b1', { command: 'true' })).toMatchObject({ exitCode: 0 });
    expect(await h.client.reaperRunOnce()).not.toContainEqual(expect.objectContaining({ companyId }));

    await h.client.completeRun(companyId, 'b1', { status: 'succeeded' });
    const reaped = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
    expect(reaped).toMatchObject([
      { leaseId: first.lease.id, cleanupStatus: 'success', reason: `destroyed: environment ${a.id} is archived` },
    ]);
    expect(existsSync(dirOf(first.lease))).toBe(false);
    expect(await stored(companyId, live.lease)).toMatchObject({ metadata: { kept: false } });
    expect((await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId)).toEqual([]);
  });

  it('a destroy that fails is counted and recorded; the reaper destroys it once the provider works', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r1', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    await h.client.completeRun(companyId, 'r1', { status: 'succeeded' });
    // The provider is not loaded by the worker any more (as after a misconfigured deploy).
    await h.store.updateEnvironment(env.id, { config: { provider: 'gone' } });
    const archived = await h.admin.archiveEnvironment(companyId, env.id);
    expect(archived.keptResources).toMatchObject({
      destroyed: 0,
      failed: 1,
      failures: [{ leaseId: ready.lease.id, error: expect.stringContaining('"gone" is not loaded') }],
    });
    expect(existsSync(dirOf(ready.lease))).toBe(true);
    expect(await stored(companyId, ready.lease)).toMatchObject({
      cleanupStatus: 'failed',
      metadata: { kept: true, destroyAttempts: 1, destroyError: expect.stringContaining('not loaded') },
    });
    await h.store.updateEnvironment(env.id, { config: { provider: 'fake' } });
    const reaped = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
    expect(reaped).toMatchObject([{ leaseId: ready.lease.id, cleanupStatus: 'success', error: null }]);
    expect(existsSync(dirOf(ready.lease))).toBe(false);
    expect(await stored(companyId, ready.lease)).toMatchObject({ cleanupStatus: 'success', metadata: { kept: false } });
    const logged = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseDestroyed });
    expect(logged).toMatchObject([{ actorType: 'system', actorId: 'envrun-reaper', entityId: ready.lease.id }]);
  });
});

describe('the reaper', () => {
  it('destroys a kept resource of an archived environment that its archive never destroyed', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r1', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    await h.client.completeRun(companyId, 'r1', { status: 'succeeded' });
    await h.store.updateEnvironment(env.id, { status: 'archived' }); // archived by another tool
    const reaped = (await h.client.reaperRunOnce()).filter((r) => r.companyId === companyId);
    expect(reaped).toMatchObject([{ leaseId: ready.lease.id, cleanupStatus: 'success' }]);
    expect(existsSync(dirOf(ready.lease))).toBe(false);
    expect(await stored(companyId, ready.lease)).toMatchObject({
      metadata: { kept: false, destroyed: { reason: `destroyed: environment ${env.id} is archived` } },
    });
  });
});

describe('retention ends', () => {
  it("an operator's release of a retained lease destroys its resource with destroyLease", async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'rec',
      driver: 'sandbox',
      config: { provider: 'recorder' },
    });
    await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'bad', environmentId: env.id, leasePolicy: 'retain_on_failure' }),
    );
    await h.client.completeRun(companyId, 'bad', { status: 'failed', failureReason: 'inspect me' });
    const [retained] = await h.store.listRunLeases(companyId, 'bad');
    expect(retained).toMatchObject({ status: 'retained', metadata: { kept: true } });
    const released = await h.admin.releaseRetainedLease(companyId, retained!.id);
    expect(released).toMatchObject({
      status: 'released',
      cleanupStatus: 'success',
      metadata: { kept: false, termination: { state: 'destroyed' }, destroyed: { reason: 'retention ended' } },
    });
    const ops = recorded('bad').map((c) => c.op);
    expect(ops.filter((op) => op === 'releaseLease')).toHaveLength(1); // the run's own, which kept it
    expect(ops.at(-1)).toBe('destroyLease');
    const destroy = recorded('bad').at(-1)!;
    expect(destroy).toMatchObject({ lease: { providerLeaseId: retained!.providerLeaseId } });
    expect(await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseDestroyed })).toHaveLength(1);
  });
});

describe('the control plane says what becomes of the resource', () => {
  it('`destroy` frees a reused resource at completion; cancelActiveWork reaches the provider', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'rec',
      driver: 'sandbox',
      config: { provider: 'recorder' },
    });
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'd1', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    const after = await h.client.completeRun(companyId, 'd1', {
      status: 'succeeded',
      providerResourceDisposition: 'destroy',
      cancelActiveWork: true,
    });
    expect(after.releasedLeases[0]).toMatchObject({
      status: 'released',
      metadata: { kept: false, providerResourceDisposition: 'destroy', termination: { state: 'destroyed' } },
    });
    expect(recorded('d1').find((c) => c.op === 'releaseLease')).toMatchObject({ keep: false, cancelActiveWork: true });
    expect(existsSync(dirOf(ready.lease))).toBe(false);
    const [row] = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseReleased });
    expect(row!.details).toMatchObject({ providerResourceDisposition: 'destroy', cancelActiveWork: true });

    // Omitted: the policy decides, and running commands are waited for.
    await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'd2', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    await h.client.completeRun(companyId, 'd2', { status: 'succeeded' });
    expect(recorded('d2').find((c) => c.op === 'releaseLease')).toMatchObject({ keep: true, cancelActiveWork: false });
  });

  it('`stop_and_retain` keeps an ephemeral resource (stopped) until its environment is archived', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 's1', environmentId: env.id, leasePolicy: 'ephemeral' }),
    );
    await h.client.completeRun(companyId, 's1', {
      status: 'succeeded',
      providerResourceDisposition: 'stop_and_retain',
    });
    expect(existsSync(dirOf(ready.lease))).toBe(true);
    expect(await stored(companyId, ready.lease)).toMatchObject({
      status: 'released',
      metadata: { kept: true, providerResourceDisposition: 'stop_and_retain', termination: { state: 'stopped' } },
    });
    expect((await h.admin.archiveEnvironment(companyId, env.id)).keptResources).toMatchObject({ destroyed: 1 });
    expect(existsSync(dirOf(ready.lease))).toBe(false);
  });

  it('`destroy` never frees a resource another live run holds: it stays kept, and that run goes on', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const reuse = (run: string) =>
      runRequest({ companyId, heartbeatRunId: run, environmentId: env.id, leasePolicy: 'reuse_by_environment' });
    const one = await h.client.startRunAndWaitReady(reuse('x1'));
    const two = await h.client.startRunAndWaitReady(reuse('x2'));
    await h.client.completeRun(companyId, 'x1', { status: 'succeeded', providerResourceDisposition: 'destroy' });
    expect(existsSync(dirOf(one.lease))).toBe(true);
    expect(await stored(companyId, one.lease)).toMatchObject({
      metadata: { kept: true, keptInUseBy: two.lease.id, providerResourceDisposition: 'destroy' },
    });
    expect(await h.client.exec(companyId, 'x2', { command: 'true' })).toMatchObject({ exitCode: 0 });
    await h.client.completeRun(companyId, 'x2', { status: 'succeeded', providerResourceDisposition: 'destroy' });
    expect(existsSync(dirOf(one.lease))).toBe(false);
  });

  it('a cancel carries them too: `destroy` frees the reused resource of a cancelled run', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'rec',
      driver: 'sandbox',
      config: { provider: 'recorder' },
    });
    const ready = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'c1', environmentId: env.id, leasePolicy: 'reuse_by_environment' }),
    );
    await h.client.cancelRun(companyId, 'c1', { providerResourceDisposition: 'destroy', cancelActiveWork: true });
    expect(recorded('c1').find((c) => c.op === 'releaseLease')).toMatchObject({ keep: false, cancelActiveWork: true });
    expect(existsSync(dirOf(ready.lease))).toBe(false);
    expect(await stored(companyId, ready.lease)).toMatchObject({
      status: 'released',
      failureReason: 'run cancelled',
      metadata: { kept: false, providerResourceDisposition: 'destroy' },
    });
  });

  it('histories with a disposition (complete) and a release request (cancel) replay', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const reuse = (run: string) =>
      runRequest({ companyId, heartbeatRunId: run, environmentId: env.id, leasePolicy: 'reuse_by_environment' });
    await h.client.startRunAndWaitReady(reuse('h1'));
    await h.client.completeRun(companyId, 'h1', { status: 'failed', providerResourceDisposition: 'keep_running' });
    await h.client.startRunAndWaitReady(reuse('h2'));
    await h.client.cancelRun(companyId, 'h2', {
      providerResourceDisposition: 'stop_and_retain',
      cancelActiveWork: true,
    });
    for (const run of ['h1', 'h2']) {
      const history = await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, run)).fetchHistory();
      await Worker.runReplayHistory(
        { workflowBundle: { codePath: inject('workflowBundle') }, replayName: run },
        history,
      );
    }
  });

  it('bad values are refused naming the field, and nothing is released', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'b1', environmentId: env.id }));
    await expect(
      h.client.completeRun(companyId, 'b1', { status: 'succeeded', providerResourceDisposition: 'shred' as 'destroy' }),
    ).rejects.toThrow(/completion\.providerResourceDisposition/);
    await expect(
      h.client.cancelRun(companyId, 'b1', { cancelActiveWork: 'yes' as unknown as boolean }),
    ).rejects.toThrow(/release\.cancelActiveWork/);
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(1);
    await h.client.completeRun(companyId, 'b1', { status: 'succeeded' });
  });
});
