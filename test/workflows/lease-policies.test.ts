// Every lease policy, shown by its end state in the database and on the provider's side.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EnvironmentLease } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, tempWorkspace } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
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

const dirOf = (lease: EnvironmentLease) =>
  lease.metadata?.provider && (lease.metadata.provider as { root: string }).root;

describe('lease policies', () => {
  it('ephemeral: a fresh resource per run, destroyed at release', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const leases: EnvironmentLease[] = [];
    for (const run of ['e1', 'e2']) {
      const req = runRequest({ companyId, heartbeatRunId: run, environmentId: env.id, leasePolicy: 'ephemeral' });
      leases.push((await h.client.startRunAndWaitReady(req)).lease);
      await h.client.completeRun(companyId, run, { status: 'succeeded' });
    }
    expect(leases[0]!.providerLeaseId).not.toBe(leases[1]!.providerLeaseId);
    for (const l of leases) expect(existsSync(dirOf(l) as string)).toBe(false);
    expect((await h.store.listLeases(companyId)).map((l) => [l.status, l.cleanupStatus])).toEqual([
      ['released', 'success'],
      ['released', 'success'],
    ]);
  });

  it('reuse_by_environment: the next run on the environment resumes the released resource', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const first = await h.client.startRunAndWaitReady(
      runRequest({
        companyId,
        heartbeatRunId: 'r1',
        environmentId: env.id,
        leasePolicy: 'reuse_by_environment',
        runtimeOverlay: { provisionCommand: 'echo from-r1 > ../state' },
      }),
    );
    await h.client.completeRun(companyId, 'r1', { status: 'succeeded' });
    expect(existsSync(dirOf(first.lease) as string)).toBe(true); // kept for the next run
    const second = await h.client.startRunAndWaitReady(
      runRequest({
        companyId,
        heartbeatRunId: 'r2',
        environmentId: env.id,
        leasePolicy: 'reuse_by_environment',
        runtimeOverlay: { provisionCommand: 'grep -q from-r1 ../state' },
      }),
    );
    expect(second.lease.providerLeaseId).toBe(first.lease.providerLeaseId);
    expect(second.lease.providerLeaseId).toBe(`fake://env-${env.id}`);
    await h.client.completeRun(companyId, 'r2', { status: 'succeeded' });
    const rows = await h.store.listLeases(companyId);
    expect(rows.map((l) => [l.heartbeatRunId, l.status, l.leasePolicy])).toEqual([
      ['r2', 'released', 'reuse_by_environment'],
      ['r1', 'released', 'reuse_by_environment'],
    ]);
    // Another environment never sees it.
    const other = await sandbox(companyId);
    const third = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'r3', environmentId: other.id, leasePolicy: 'reuse_by_environment' }),
    );
    expect(third.lease.providerLeaseId).not.toBe(first.lease.providerLeaseId);
    await h.client.completeRun(companyId, 'r3', { status: 'succeeded' });
  });

  it('reuse_by_execution_workspace: resumed only by runs of the same execution workspace', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const cwd = tempWorkspace();
    const [wsA, wsB] = await Promise.all([
      h.admin.createExecutionWorkspace({ companyId, name: 'a', cwd }),
      h.admin.createExecutionWorkspace({ companyId, name: 'b', cwd }),
    ]);
    const ids: Record<string, string | null> = {};
    for (const [run, ws] of [
      ['a1', wsA],
      ['a2', wsA],
      ['b1', wsB],
    ] as const) {
      const result = await h.client.startRunAndWaitReady(
        runRequest({
          companyId,
          heartbeatRunId: run,
          cwd,
          environmentId: env.id,
          executionWorkspaceId: ws.id,
          leasePolicy: 'reuse_by_execution_workspace',
        }),
      );
      ids[run] = result.lease.providerLeaseId;
      await h.client.completeRun(companyId, run, { status: 'succeeded' });
    }
    expect(ids.a2).toBe(ids.a1);
    expect(ids.b1).not.toBe(ids.a1);
    expect(ids.a1).toBe(`fake://ws-${wsA.id}`);
    // Without an execution workspace the policy cannot apply: refused, nothing leased.
    const req = runRequest({
      companyId,
      heartbeatRunId: 'x1',
      environmentId: env.id,
      leasePolicy: 'reuse_by_execution_workspace',
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'invalid_request');
    expect(err.message).toContain('request.executionWorkspaceId');
    expect(await h.store.listRunLeases(companyId, 'x1')).toEqual([]);
  });

  it('retain_on_failure: a failed run keeps its lease retained with its resource; `lease release` frees it', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId);
    const ok = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'ok', environmentId: env.id, leasePolicy: 'retain_on_failure' }),
    );
    await h.client.completeRun(companyId, 'ok', { status: 'succeeded' });
    expect(existsSync(dirOf(ok.lease) as string)).toBe(false); // success: released and destroyed as usual

    const bad = await h.client.startRunAndWaitReady(
      runRequest({ companyId, heartbeatRunId: 'bad', environmentId: env.id, leasePolicy: 'retain_on_failure' }),
    );
    await h.client.completeRun(companyId, 'bad', { status: 'failed', failureReason: 'tests failed' });
    const [retained] = await h.store.listRunLeases(companyId, 'bad');
    expect(retained).toMatchObject({
      status: 'retained',
      releasedAt: null,
      failureReason: 'tests failed',
      cleanupStatus: 'success',
    });
    expect(existsSync(dirOf(bad.lease) as string)).toBe(true);
    expect(await h.store.listLeases(companyId, 'retained')).toHaveLength(1);

    const released = await h.admin.releaseRetainedLease(companyId, retained!.id);
    expect(released).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    expect(released.releasedAt).not.toBeNull();
    expect(existsSync(dirOf(bad.lease) as string)).toBe(false);
    await expect(h.admin.releaseRetainedLease(companyId, retained!.id)).rejects.toThrow(/is released, not retained/);
    await expect(h.admin.releaseRetainedLease(uniqueId('other'), retained!.id)).rejects.toThrow(/not found/);
  });
});

describe('exactly-once create', () => {
  it('acquire attempts that create and then fail are adopted by the retry: one run, many attempts, one resource', async () => {
    const companyId = uniqueId('co');
    const env = await sandbox(companyId, {
      faults: { acquire: { fail: 3, when: 'after', message: 'timed out after creating' } },
    });
    const req = runRequest({ companyId, heartbeatRunId: 'once', environmentId: env.id });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.lease.metadata).toHaveProperty('provider.adopted', true);
    const runDir = join(h.fakeRoot, 'leases', 'once');
    expect(readdirSync(runDir)).toHaveLength(1);
    const history = await h.client.temporal.workflow.getHandle(`envrun/${companyId}/once`).fetchHistory();
    const acquireStarted = history.events!.find(
      (e) => e.activityTaskStartedEventAttributes && e.activityTaskStartedEventAttributes.attempt! >= 4,
    );
    expect(acquireStarted, 'acquire ran 4 attempts').toBeDefined();
    await h.client.completeRun(companyId, 'once', { status: 'succeeded' });
    expect(readdirSync(runDir)).toHaveLength(0);
    expect(await h.store.listRunLeases(companyId, 'once')).toHaveLength(1);
    await runEnd(h, companyId, 'once');
  });
});
