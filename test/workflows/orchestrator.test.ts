// The control plane's orchestrator interface (acquireForRun → realizeForRun → releaseForRun) over the
// durable run, on the real server: the seed's five realizeForRun scenarios, then not-found, inactive and
// release, called envrun's way (environmentId, executionWorkspaceId; Paperclip's call shapes are in
// orchestrator-paperclip.test.ts). Each call crosses Temporal; nothing is mocked.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEnvironmentRunOrchestrator,
  EnvironmentRunError,
  toControlPlaneLease,
  type EnvironmentRunOrchestrator,
} from '../../client/orchestrator/index.js';
import { ACTIVITY_ACTIONS, type Environment } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { scheduledActivities, tempWorkspace } from '../support/runs.js';

let h: Harness;
let orchestrator: EnvironmentRunOrchestrator;
beforeAll(async () => {
  h = await createHarness({
    pluginModules: [fileURLToPath(new URL('../fixtures/plugins/acme.mjs', import.meta.url))],
  });
  orchestrator = await createEnvironmentRunOrchestrator({ client: h.client, environments: h.store });
});
afterAll(async () => {
  await orchestrator?.close();
  await h?.close();
});

function realizedWorkspace(cwd = tempWorkspace()) {
  return { baseCwd: cwd, cwd, source: 'project_primary', strategy: 'project_primary' as const };
}

/** acquireForRun, then realizeForRun with the acquired environment and lease. */
async function acquireAndRealize(
  companyId: string,
  heartbeatRunId: string,
  extra: { environmentId?: string; executionWorkspaceId?: string } = {},
  persistedExecutionWorkspace: Parameters<
    EnvironmentRunOrchestrator['realizeForRun']
  >[0]['persistedExecutionWorkspace'] = null,
) {
  const { environment, lease } = await orchestrator.acquireForRun({ companyId, heartbeatRunId, ...extra });
  return orchestrator.realizeForRun({
    environment,
    lease,
    adapterType: 'claude_local',
    companyId,
    issueId: null,
    heartbeatRunId,
    executionWorkspace: realizedWorkspace(),
    effectiveExecutionWorkspaceMode: null,
    persistedExecutionWorkspace,
  });
}

async function expectEnvironmentRunError(promise: Promise<unknown>, code: string): Promise<EnvironmentRunError> {
  const err = await promise.then(
    () => {
      throw new Error(`expected ${code}, but it succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EnvironmentRunError);
  expect((err as EnvironmentRunError).code, (err as Error).message).toBe(code);
  return err as EnvironmentRunError;
}

describe('realizeForRun', () => {
  it('happy path: lease, execution target, remote execution and a version-1 realization with its driver', async () => {
    const companyId = uniqueId('co');
    const acquired = await orchestrator.acquireForRun({ companyId, heartbeatRunId: 'run-1' });
    expect(acquired.environment).toMatchObject({ companyId, driver: 'local', status: 'active' });
    expect(acquired.lease).toMatchObject({ companyId, heartbeatRunId: 'run-1', status: 'active' });
    expect(acquired.leaseContext).toMatchObject({ leaseId: acquired.lease.id, environmentId: acquired.environment.id });
    // The run holds its lease and waits: nothing is realized before the control plane asks.
    expect((await h.client.getRun(companyId, 'run-1'))?.phase).toBe('awaiting_realize');

    const cwd = tempWorkspace();
    const result = await orchestrator.realizeForRun({
      environment: acquired.environment,
      lease: acquired.lease,
      adapterType: 'claude_local',
      companyId,
      issueId: null,
      heartbeatRunId: 'run-1',
      executionWorkspace: realizedWorkspace(cwd),
      effectiveExecutionWorkspaceMode: null,
      persistedExecutionWorkspace: null,
    });
    expect(result.lease).toMatchObject({ id: acquired.lease.id, status: 'active' });
    expect(result.executionTarget).toEqual({
      kind: 'local',
      environmentId: acquired.environment.id,
      leaseId: acquired.lease.id,
      cwd,
      workspaceRealization: { mode: 'copy', authoritativeRoot: cwd, pathAliases: [], outboundRestorePaths: [] },
    });
    expect(result.remoteExecution).toBeNull();
    expect(result.workspaceRealization).toEqual(expect.objectContaining({ version: 1, driver: 'local' }));
    const activities = await scheduledActivities(h, companyId, 'run-1');
    expect(activities.filter((a) => a === 'prepareWorkspace')).toHaveLength(1);
    await orchestrator.releaseForRun({ companyId, heartbeatRunId: 'run-1', status: 'succeeded' });
  });

  it('realization failure: throws workspace_realization_failed with environment and driver; no target', async () => {
    const companyId = uniqueId('co');
    const workspace = await h.admin.createExecutionWorkspace({
      companyId,
      name: 'ws',
      cwd: tempWorkspace(),
      config: { provisionCommand: 'echo sandbox unreachable >&2; exit 3' },
    });
    const { environment, lease } = await orchestrator.acquireForRun({
      companyId,
      heartbeatRunId: 'run-f',
      executionWorkspaceId: workspace.id,
    });
    const err = await expectEnvironmentRunError(
      orchestrator.realizeForRun({
        environment,
        lease,
        adapterType: 'claude_local',
        companyId,
        heartbeatRunId: 'run-f',
        executionWorkspace: realizedWorkspace(),
        persistedExecutionWorkspace: workspace,
      }),
      'workspace_realization_failed',
    );
    expect(err.environmentId).toBe(environment.id);
    expect(err.driver).toBe('local');
    expect(err.message).toContain('sandbox unreachable');
    expect(err.cause).toBeDefined();
    expect((await h.store.listActivity(companyId, { runId: 'run-f' })).map((l) => l.action)).not.toContain(
      ACTIVITY_ACTIONS.workspaceRealized,
    );
    // It threw once the step's retries were spent: the run did not wait for an operator.
    expect((await h.client.waitEnded(companyId, 'run-f'))?.phase).toBe('failed');
  });

  it('target resolution failure: throws transport_resolution_failed with the environment', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'sbx',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { target: { fail: 'always', message: 'network error' } } },
    });
    const err = await expectEnvironmentRunError(
      acquireAndRealize(companyId, 'run-t', { environmentId: env.id }),
      'transport_resolution_failed',
    );
    expect(err.environmentId).toBe(env.id);
    expect(err.driver).toBe('sandbox');
  });

  it('plugin driver: skips realization, realization {} and target null', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'vm',
      driver: 'plugin',
      config: { pluginKey: 'acme', driverKey: 'vm' },
    });
    const result = await acquireAndRealize(companyId, 'run-p', { environmentId: env.id });
    expect(result.workspaceRealization).toEqual({});
    expect(result.executionTarget).toBeNull();
    expect((await h.store.getLease(companyId, result.lease.id))!.metadata).not.toHaveProperty('workspaceRealization');
    await orchestrator.releaseForRun({ companyId, heartbeatRunId: 'run-p', status: 'succeeded' });
  });

  it('persists the realization on the lease and the execution workspace; returns the stored rows', async () => {
    const companyId = uniqueId('co');
    const workspace = await h.admin.createExecutionWorkspace({
      companyId,
      name: 'ws',
      cwd: tempWorkspace(),
      config: { provisionCommand: 'echo provisioned > marker' },
    });
    const result = await acquireAndRealize(companyId, 'run-m', { executionWorkspaceId: workspace.id }, workspace);
    const storedLease = await h.store.getLease(companyId, result.lease.id);
    expect(storedLease?.metadata).toEqual(expect.objectContaining({ workspaceRealization: expect.any(Object) }));
    expect(result.lease).toEqual(toControlPlaneLease(storedLease!));
    const storedWorkspace = await h.store.getExecutionWorkspace(companyId, workspace.id);
    expect(storedWorkspace?.metadata).toEqual(
      expect.objectContaining({
        workspaceRealizationRequest: expect.any(Object),
        workspaceRealization: expect.any(Object),
      }),
    );
    // The given workspace, its metadata as stored.
    expect(result.persistedExecutionWorkspace).toEqual({ ...workspace, metadata: storedWorkspace?.metadata });
    // The provision command came from the persisted execution workspace's config.
    expect(
      (storedWorkspace?.metadata?.workspaceRealizationRequest as { runtimeOverlay: unknown }).runtimeOverlay,
    ).toMatchObject({ provisionCommand: 'echo provisioned > marker' });
    await orchestrator.releaseForRun({ companyId, heartbeatRunId: 'run-m', status: 'succeeded' });
  });
});

describe('acquireForRun', () => {
  it("an unknown or another company's environment: environment_not_found", async () => {
    const owner = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId: owner,
      name: 'e',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const err = await expectEnvironmentRunError(
      orchestrator.acquireForRun({ companyId: uniqueId('co'), heartbeatRunId: 'r', environmentId: env.id }),
      'environment_not_found',
    );
    expect(err.environmentId).toBe(env.id);
    expect(err.driver).toBeUndefined();
  });

  it('an archived environment: environment_inactive, and no lease', async () => {
    const companyId = uniqueId('co');
    const env: Environment = await h.admin.createEnvironment({
      companyId,
      name: 'e',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    await h.admin.archiveEnvironment(companyId, env.id);
    await expectEnvironmentRunError(
      orchestrator.acquireForRun({ companyId, heartbeatRunId: 'r', environmentId: env.id }),
      'environment_inactive',
    );
    expect(await h.store.listLeases(companyId)).toEqual([]);
  });

  it('bad input names the field and starts nothing', async () => {
    await expect(orchestrator.acquireForRun({ companyId: 'a b', heartbeatRunId: 'r' })).rejects.toThrow(/companyId/);
  });
});

describe('releaseForRun', () => {
  it('releases a ready run: the lease rows as stored, no errors, the sandbox gone, the release logged', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'e',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const result = await acquireAndRealize(companyId, 'run-r', { environmentId: env.id });
    const sandbox = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    expect(existsSync(sandbox)).toBe(true);
    const { released, errors } = await orchestrator.releaseForRun({
      companyId,
      heartbeatRunId: 'run-r',
      status: 'succeeded',
    });
    expect(errors).toEqual([]);
    const stored = (await h.store.getLease(companyId, result.lease.id))!;
    expect(released.map((r) => r.lease)).toEqual([toControlPlaneLease(stored)]);
    expect(released[0]).toMatchObject({
      environment: { id: env.id, driver: 'sandbox' },
      lease: { status: 'released', cleanupStatus: 'success' },
      leaseContext: { leaseId: result.lease.id, environmentId: env.id, heartbeatRunId: 'run-r' },
    });
    expect(existsSync(sandbox)).toBe(false);
    const log = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseReleased });
    expect(log).toHaveLength(1);
  });

  it('releases a run still awaiting realize, with a failed status', async () => {
    const companyId = uniqueId('co');
    await orchestrator.acquireForRun({ companyId, heartbeatRunId: 'run-a' });
    const { released, errors } = await orchestrator.releaseForRun({
      companyId,
      heartbeatRunId: 'run-a',
      status: 'cancelled',
    });
    expect(errors).toEqual([]);
    expect(released).toMatchObject([
      { lease: { status: 'failed', failureReason: 'run cancelled', cleanupStatus: 'success' } },
    ]);
  });

  it('reports a lease whose provider cleanup failed, per lease', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'e',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { release: { fail: 'always', message: 'API down' } } },
    });
    const result = await acquireAndRealize(companyId, 'run-c', { environmentId: env.id });
    const { released, errors } = await orchestrator.releaseForRun({
      companyId,
      heartbeatRunId: 'run-c',
      status: 'succeeded',
    });
    expect(released).toMatchObject([{ lease: { id: result.lease.id, cleanupStatus: 'failed' } }]);
    expect(errors).toEqual([{ leaseId: result.lease.id, error: expect.any(EnvironmentRunError) }]);
    expect(errors[0]!.error).toMatchObject({
      code: 'lease_cleanup_failed',
      message: 'API down',
      environmentId: env.id,
    });
  });

  it('a run that never started releases nothing', async () => {
    expect(
      await orchestrator.releaseForRun({ companyId: uniqueId('co'), heartbeatRunId: 'none', status: 'succeeded' }),
    ).toEqual({
      released: [],
      errors: [],
    });
  });
});
