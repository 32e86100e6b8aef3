// The seed's scenarios, end to end on the real Temporal server, a real PostgreSQL and real drivers.
import { WorkflowFailedError } from '@temporalio/client';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, RunEndedError, RunStateError } from '../../client/errors.js';
import { ACTIVITY_ACTIONS } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, scheduledActivities, tempWorkspace } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  // The plugin scenario's environment is served by the example plugin (key "acme").
  h = await createHarness({
    pluginModules: [fileURLToPath(new URL('../fixtures/plugins/acme.mjs', import.meta.url))],
  });
});
afterAll(async () => {
  await h?.close();
});

describe('happy path', () => {
  it('local: returns lease, target and realization; logs acquired and realized once each', async () => {
    const req = runRequest();
    const result = await h.client.startRunAndWaitReady(req);
    const cwd = (req.workspace as { cwd: string }).cwd;
    expect(result.lease).toMatchObject({
      companyId: req.companyId,
      heartbeatRunId: req.heartbeatRunId,
      status: 'active',
      provider: 'local',
    });
    expect(result.executionTarget).toEqual({
      kind: 'local',
      environmentId: result.lease.environmentId,
      leaseId: result.lease.id,
      cwd,
    });
    expect(result.remoteExecution).toBeNull();
    expect(result.workspaceRealization).toMatchObject({ version: 1, transport: 'local', sync: { strategy: 'none' } });
    expect(await scheduledActivities(h, req.companyId, req.heartbeatRunId)).toEqual([
      'local:resolveEnvironment',
      // Writes its activity-log row in the same transaction as the lease.
      'acquireLease',
      // Realize, persist (with its log row) and resolve the target, on the host that holds the folder (its
      // own task queue), not in whichever worker runs the workflow.
      'prepareWorkspace',
    ]);
    // The company's local environment was ensured on demand, exactly one.
    const envs = await h.admin.listEnvironments(req.companyId);
    expect(envs.map((e) => e.driver)).toEqual(['local']);
    const log = await h.store.listActivity(req.companyId, { runId: req.heartbeatRunId });
    expect(log.map((l) => l.action)).toEqual([ACTIVITY_ACTIONS.leaseAcquired, ACTIVITY_ACTIONS.workspaceRealized]);
    expect(log[0]!.details).toEqual({
      environmentId: envs[0]!.id,
      driver: 'local',
      leasePolicy: 'ephemeral',
      provider: 'local',
      executionWorkspaceId: null,
      issueId: null,
    });

    const state = await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(state.phase).toBe('released');
    const [lease] = await h.store.listRunLeases(req.companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success', failureReason: null });
    expect(lease!.releasedAt).not.toBeNull();
    const after = await h.store.listActivity(req.companyId, { runId: req.heartbeatRunId });
    expect(after.filter((l) => l.action === ACTIVITY_ACTIONS.leaseReleased)).toHaveLength(1);
  });

  it('sandbox (fake): realizes into the sandbox, provisions there with only the explicit env, releases the folder', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'fake',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    process.env.ENVRUN_TEST_SECRET = 'do-not-leak';
    const req = runRequest({
      companyId,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'env > provisioned.env; echo ok > marker' },
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.executionTarget).toMatchObject({ kind: 'remote', transport: 'sandbox', providerKey: 'fake' });
    const target = result.executionTarget as { remoteCwd: string; providerLeaseId: string };
    expect(target.providerLeaseId).toMatch(new RegExp(`^fake://${req.heartbeatRunId}/`));
    expect(existsSync(`${target.remoteCwd}/marker`)).toBe(true);
    const exec = await h.admin.exec(companyId, req.heartbeatRunId, { command: 'cat', args: ['provisioned.env'] });
    expect(exec.exitCode).toBe(0);
    expect(exec.stdout).not.toContain('do-not-leak');
    expect(exec.stdout).not.toContain('ENVRUN_TEST_SECRET');
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(existsSync(target.remoteCwd)).toBe(false);
  });

  it('persists metadata on the lease and the execution workspace and returns the stored rows', async () => {
    const companyId = uniqueId('co');
    const cwd = tempWorkspace();
    const ws = await h.admin.createExecutionWorkspace({
      companyId,
      name: 'ws',
      cwd,
      config: { provisionCommand: 'touch from-config' },
    });
    const req = runRequest({ companyId, cwd, executionWorkspaceId: ws.id });
    const result = await h.client.startRunAndWaitReady(req);
    const storedLease = await h.store.getLease(companyId, result.lease.id);
    const storedWs = await h.store.getExecutionWorkspace(companyId, ws.id);
    expect(result.lease).toEqual(storedLease);
    expect(result.persistedExecutionWorkspace).toEqual(storedWs);
    expect(storedLease!.metadata).toHaveProperty('workspaceRealization.version', 1);
    expect(storedWs!.metadata).toHaveProperty(
      'workspaceRealizationRequest.runtimeOverlay.provisionCommand',
      'touch from-config',
    );
    expect(storedWs!.metadata).toHaveProperty('workspaceRealization.summary', `Local workspace realized at ${cwd}.`);
    expect(storedWs!.metadata).toHaveProperty('config.provisionCommand', 'touch from-config'); // kept, not overwritten
    expect(existsSync(`${cwd}/from-config`)).toBe(true);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('plugin driver: skips realization, realization stays {}, target null', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'p',
      driver: 'plugin',
      config: { pluginKey: 'acme', driverKey: 'vm' },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.workspaceRealization).toEqual({});
    expect(result.executionTarget).toBeNull();
    expect(result.remoteExecution).toBeNull();
    expect(result.lease.providerLeaseId).toBe(`plugin://acme/vm/${req.heartbeatRunId}`);
    const steps = await scheduledActivities(h, companyId, req.heartbeatRunId);
    // The plugin realizes nothing: the prepare step only resolves its target.
    expect(steps).toEqual(['local:resolveEnvironment', 'acquireLease', 'prepareWorkspace']);
    const leased = await h.store.getLease(companyId, result.lease.id);
    expect(leased!.metadata).not.toHaveProperty('workspaceRealization');
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });
});

describe('failures', () => {
  it('realization failure → workspace_realization_failed with environment and driver; target never resolved; lease failed', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'flaky',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always', message: 'sandbox unreachable' } } },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    expect(err).toMatchObject({
      environmentId: env.id,
      driver: 'sandbox',
      provider: 'fake',
      message: 'sandbox unreachable',
    });
    const end = await runEnd(h, companyId, req.heartbeatRunId);
    expect(end).toBeInstanceOf(WorkflowFailedError);
    const steps = await scheduledActivities(h, companyId, req.heartbeatRunId);
    // One prepare activity, retried inside by policy; it never got as far as persisting or the target.
    expect(steps.filter((s) => s === 'prepareWorkspace')).toHaveLength(1);
    expect((await h.store.listActivity(companyId, { runId: req.heartbeatRunId })).map((l) => l.action)).not.toContain(
      ACTIVITY_ACTIONS.workspaceRealized,
    );
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'failed', cleanupStatus: 'success' });
    expect(lease!.failureReason).toContain('workspace_realization_failed');
  });

  it('a realize fault on the first two attempts is retried by policy and the run becomes ready', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'flaky-twice',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 2 } } },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.executionTarget).toMatchObject({ transport: 'sandbox' });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('a failing provision command reports its exit code and first stderr line', async () => {
    const req = runRequest({
      runtimeOverlay: { provisionCommand: 'echo "npm ERR! missing script" >&2; echo second >&2; exit 3' },
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    expect(err.message).toBe('provision command exited with code 3: npm ERR! missing script');
    expect(err.driver).toBe('local');
  });

  it('target failure → transport_resolution_failed', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'no-target',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { target: { fail: 'always', message: 'network error' } } },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'transport_resolution_failed');
    expect(err).toMatchObject({ environmentId: env.id, driver: 'sandbox', message: 'network error' });
    await runEnd(h, companyId, req.heartbeatRunId);
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease!.status).toBe('failed');
  });

  it('acquire failure → lease_acquire_failed, and nothing is left active', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'full',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { acquire: { fail: 'always', message: 'quota exceeded' } } },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'lease_acquire_failed');
    expect(err.message).toBe('quota exceeded');
    await runEnd(h, companyId, req.heartbeatRunId);
    expect(await h.store.listLeases(companyId, 'active')).toEqual([]);
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'failed', providerLeaseId: null });
  });

  it("environment_not_found for a missing id and for another company's environment", async () => {
    const other = await h.admin.createEnvironment({
      companyId: uniqueId('other'),
      name: 'theirs',
      driver: 'plugin',
      config: { pluginKey: 'a', driverKey: 'b' },
    });
    const missing = '00000000-0000-4000-8000-000000000000';
    for (const environmentId of [missing, other.id]) {
      const req = runRequest({ environmentId });
      const err = await expectRunError(h.client.startRunAndWaitReady(req), 'environment_not_found');
      expect(err.environmentId).toBe(environmentId);
      expect(await h.store.listRunLeases(req.companyId, req.heartbeatRunId)).toEqual([]);
    }
  });

  it('environment_inactive for an archived environment', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'old',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    await h.admin.archiveEnvironment(companyId, env.id);
    const err = await expectRunError(
      h.client.startRunAndWaitReady(runRequest({ companyId, environmentId: env.id })),
      'environment_inactive',
    );
    expect(err).toMatchObject({ environmentId: env.id, driver: 'sandbox' });
  });

  it('unsupported_environment for a driver this worker does not offer (a provider it does not load)', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'cloud',
      driver: 'sandbox',
      config: { provider: 'not-loaded' },
    });
    const err = await expectRunError(
      h.client.startRunAndWaitReady(runRequest({ companyId, environmentId: env.id })),
      'unsupported_environment',
    );
    expect(err.message).toContain('not-loaded');
    expect(await h.store.listLeases(companyId, 'active')).toEqual([]);
  });

  it('invalid_request for a workflow started around the client with bad input', async () => {
    const workflowId = uniqueId('raw');
    const handle = await h.client.temporal.workflow.start('environmentRun', {
      workflowId,
      taskQueue: h.taskQueue,
      args: [{ companyId: 'co', heartbeatRunId: 'r', workspace: { baseCwd: 'relative', cwd: '/x' } }],
    });
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toMatchObject({ type: 'invalid_request' });
    expect((err as WorkflowFailedError).cause?.message).toContain('request.workspace.baseCwd');
  });

  it('lease_conflict: a second run on a leased execution workspace is refused, never two active leases', async () => {
    const companyId = uniqueId('co');
    const cwd = tempWorkspace();
    const ws = await h.admin.createExecutionWorkspace({ companyId, name: 'ws', cwd });
    const first = runRequest({ companyId, cwd, executionWorkspaceId: ws.id });
    await h.client.startRunAndWaitReady(first);
    const second = runRequest({ companyId, cwd, executionWorkspaceId: ws.id });
    const err = await expectRunError(h.client.startRunAndWaitReady(second), 'lease_conflict');
    expect(err.message).toContain(first.heartbeatRunId);
    expect(await h.store.listLeases(companyId, 'active')).toHaveLength(1);
    await h.client.completeRun(companyId, first.heartbeatRunId, { status: 'succeeded' });
    // Once released, the workspace can be leased again.
    const third = runRequest({ companyId, cwd, executionWorkspaceId: ws.id });
    await h.client.startRunAndWaitReady(third);
    await h.client.completeRun(companyId, third.heartbeatRunId, { status: 'succeeded' });
  });

  it('lease_cleanup_failed: a provider that cannot release is retried, then recorded and reported', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'sticky',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { release: { fail: 'always', message: 'sandbox API 503' } } },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    await h.client.startRunAndWaitReady(req);
    const state = await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(state.phase).toBe('failed');
    expect(state.error).toMatchObject({
      code: 'lease_cleanup_failed',
      environmentId: env.id,
      driver: 'sandbox',
      provider: 'fake',
    });
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'failed' });
    expect(lease!.metadata).toHaveProperty('cleanupError', 'sandbox API 503');
    const end = await runEnd(h, companyId, req.heartbeatRunId);
    expect((end as WorkflowFailedError).cause).toMatchObject({ type: 'lease_cleanup_failed' });
  });

  it('lease_release_failed: the lease row vanished while the run held it', async () => {
    const req = runRequest();
    const result = await h.client.startRunAndWaitReady(req);
    await h.database.pool.query('delete from environment_leases where id = $1', [result.lease.id]);
    const state = await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(state.error).toMatchObject({ code: 'lease_release_failed' });
    const end = await runEnd(h, req.companyId, req.heartbeatRunId);
    expect((end as WorkflowFailedError).cause).toMatchObject({ type: 'lease_release_failed' });
  });
});

describe('lifecycle', () => {
  it('starting the same run twice reaches the same workflow and makes one lease', async () => {
    const req = runRequest();
    const [a, b] = await Promise.all([h.client.startRun(req), h.client.startRun(req)]);
    expect(a.workflowId).toBe(b.workflowId);
    const [r1, r2] = await Promise.all([
      h.client.startRunAndWaitReady(req),
      h.client.waitReady(req.companyId, req.heartbeatRunId),
    ]);
    expect(r1.lease.id).toBe(r2.lease.id);
    expect(await h.store.listRunLeases(req.companyId, req.heartbeatRunId)).toHaveLength(1);
    await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
    // After it ended, a third start still answers with that run, not a new one.
    const again = await h.client.startRun(req);
    expect(again).toEqual({ workflowId: a.workflowId, started: false });
    expect(await h.store.listRunLeases(req.companyId, req.heartbeatRunId)).toHaveLength(1);
  });

  it('complete with failed: lease failed with the reason; the workflow itself succeeds', async () => {
    const req = runRequest();
    await h.client.startRunAndWaitReady(req);
    const state = await h.client.completeRun(req.companyId, req.heartbeatRunId, {
      status: 'failed',
      failureReason: 'agent crashed',
    });
    expect(state.phase).toBe('released');
    const [lease] = await h.store.listRunLeases(req.companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'failed', failureReason: 'agent crashed', cleanupStatus: 'success' });
    expect(await runEnd(h, req.companyId, req.heartbeatRunId)).toMatchObject({ status: 'failed' });
  });

  it('complete is refused before the run is ready and for a bad status', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'slow',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({ companyId, environmentId: env.id, runtimeOverlay: { provisionCommand: 'sleep 3' } });
    await h.client.startRun(req);
    await expect(h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' })).rejects.toThrow(
      /not ready/,
    );
    await expect(h.client.completeRun(companyId, req.heartbeatRunId, { status: 'done' as 'failed' })).rejects.toThrow(
      /completion\.status/,
    );
    await h.client.waitReady(companyId, req.heartbeatRunId);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('cancel while provisioning: provision stopped, lease released, run cancelled', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'c',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({ companyId, environmentId: env.id, runtimeOverlay: { provisionCommand: 'sleep 30' } });
    await h.client.startRun(req);
    const waiting = h.client.waitReady(companyId, req.heartbeatRunId).catch((e: unknown) => e);
    for (let i = 0; i < 100 && (await h.client.getRun(companyId, req.heartbeatRunId))?.phase !== 'realizing'; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const started = Date.now();
    await h.client.cancelRun(companyId, req.heartbeatRunId);
    expect(Date.now() - started).toBeLessThan(20_000);
    await expectRunError(
      waiting.then((e) => Promise.reject(e)),
      'run_cancelled',
    );
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', failureReason: 'run cancelled', cleanupStatus: 'success' });
    expect((await h.client.getRun(companyId, req.heartbeatRunId))?.phase).toBe('cancelled');
  });

  it('a long provision heartbeats its last output line, visible on the pending activity', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'p',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({
      companyId,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'echo installing-deps; sleep 5' },
    });
    const { workflowId } = await h.client.startRun(req);
    let seen: unknown = null;
    for (let i = 0; i < 80 && !seen; i++) {
      const desc = await h.client.temporal.workflow.getHandle(workflowId).describe();
      const pending = desc.raw.pendingActivities?.find((a) => a.activityType?.name === 'prepareWorkspace');
      const payload = pending?.heartbeatDetails?.payloads?.[0]?.data;
      if (payload) {
        const details = JSON.parse(Buffer.from(payload).toString('utf8')) as { lastLine?: string };
        if (details.lastLine) seen = details;
      }
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toEqual({ lastLine: 'installing-deps' });
    await h.client.cancelRun(companyId, req.heartbeatRunId);
  });

  it('cancel when ready releases the lease and logs it', async () => {
    const req = runRequest();
    await h.client.startRunAndWaitReady(req);
    await h.client.cancelRun(req.companyId, req.heartbeatRunId);
    const [lease] = await h.store.listRunLeases(req.companyId, req.heartbeatRunId);
    expect(lease!.status).toBe('released');
    const released = await h.store.listActivity(req.companyId, {
      runId: req.heartbeatRunId,
      action: ACTIVITY_ACTIONS.leaseReleased,
    });
    expect(released).toHaveLength(1);
    expect(released[0]!.details).toMatchObject({ outcome: 'cancelled', status: 'released' });
  });

  it('cancelling a run that already ended is refused with RunEndedError, saying how it ended; nothing changes', async () => {
    const companyId = uniqueId('co');
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'completed' }));
    await h.client.completeRun(companyId, 'completed', { status: 'failed', failureReason: 'tests red' });
    const flaky = await h.admin.createEnvironment({
      companyId,
      name: 'f',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always' } } },
    });
    await expectRunError(
      h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'failed', environmentId: flaky.id })),
      'workspace_realization_failed',
    );
    await runEnd(h, companyId, 'failed');
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'cancelled' }));
    await h.client.cancelRun(companyId, 'cancelled');
    const before = { leases: await h.store.listLeases(companyId), activity: await h.store.listActivity(companyId) };

    for (const [run, outcome, detail, how] of [
      ['completed', 'completed', 'failed', 'completed, status failed'],
      ['failed', 'failed', 'workspace_realization_failed', 'failed, error workspace_realization_failed'],
      ['cancelled', 'cancelled', null, 'cancelled'],
    ] as const) {
      const err = await h.client.cancelRun(companyId, run).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, run).toBeInstanceOf(RunEndedError);
      expect(err).toBeInstanceOf(RunStateError);
      expect(err).toMatchObject({
        outcome,
        detail,
        message: `run ${run} of company ${companyId} already ended, nothing to cancel: ${how}`,
      });
    }
    expect({ leases: await h.store.listLeases(companyId), activity: await h.store.listActivity(companyId) }).toEqual(
      before,
    );
    const phases = await Promise.all(
      ['completed', 'failed', 'cancelled'].map(async (run) => (await h.client.getRun(companyId, run))?.phase),
    );
    expect(phases).toEqual(['released', 'failed', 'cancelled']);
    await expect(h.client.cancelRun(companyId, 'never-started')).rejects.toThrow(NotFoundError);
  });

  it('getRun reports phase, lease and target', async () => {
    const req = runRequest();
    expect(await h.client.getRun(req.companyId, req.heartbeatRunId)).toBeNull();
    const result = await h.client.startRunAndWaitReady(req);
    const state = await h.client.getRun(req.companyId, req.heartbeatRunId);
    expect(state).toMatchObject({ phase: 'ready', leaseId: result.lease.id, driver: 'local', error: null });
    expect(state!.result!.executionTarget).toEqual(result.executionTarget);
    expect(state!.timestamps.ready).not.toBeNull();
    await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
  });
});
