// Warm pools on the dev server, fake provider: the pool workflow keeps `size` sandboxes provisioned from its
// base; a matching run takes one (atomically: concurrent runs never share one) and skips the provision
// command when the fingerprint matches; the pool refills, retires what a base change made stale, and
// leaves nothing behind when the environment is archived or the pool's workflow is gone.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  isPooledRunId,
  poolWorkflowId,
  runWorkflowId,
  type Environment,
  type EnvironmentLease,
  type WorkspaceRealizationRecord,
} from '../../contracts/index.js';
import { runCli } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, until } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

const PROVISION = 'echo provisioned >> provision.log';

function baseFolder(): string {
  const dir = mkdtempSync(join(inject('tmpRoot'), 'pool-base-'));
  writeFileSync(join(dir, 'lock.txt'), 'deps v1\n');
  writeFileSync(join(dir, 'main.txt'), 'code\n');
  return dir;
}

async function pooledEnvironment(companyId: string, base: string, size = 2, extra: Record<string, unknown> = {}) {
  return h.admin.createEnvironment({
    companyId,
    name: 'pooled',
    driver: 'sandbox',
    config: {
      provider: 'fake',
      warmPool: {
        size,
        maxIdle: '1h',
        base: { cwd: base, provisionCommand: PROVISION, fingerprintFiles: ['lock.txt'] },
      },
      ...extra,
    },
  });
}

/** A run whose request matches the pool's base: its folder and provision command. */
const matchingRun = (env: Environment, base: string) =>
  runRequest({
    companyId: env.companyId,
    environmentId: env.id,
    cwd: base,
    runtimeOverlay: { provisionCommand: PROVISION },
  });
const pooledLeases = (env: Environment) => h.store.listPooledLeases(env.companyId, env.id);
const readyLeases = async (env: Environment) =>
  (await pooledLeases(env)).filter((l) => (l.metadata?.pool as { state?: string } | undefined)?.state === 'ready');
const workspaceOf = (lease: EnvironmentLease) =>
  (lease.metadata!.workspaceRealization as WorkspaceRealizationRecord).remote.path;

/** Waits until `size` pooled sandboxes are ready and the pool's workflow has seen them so (it is idle). */
async function fullPool(env: Environment, size: number) {
  return until(
    `${size} ready pooled sandboxes`,
    async () => {
      const ready = await readyLeases(env);
      const seen = await h.admin.getPool(env.companyId, env.id);
      const seenReady = seen?.members
        .filter((m) => m.state === 'ready')
        .map((m) => m.leaseId)
        .sort();
      const ids = ready.map((l) => l.id).sort();
      return ready.length === size && JSON.stringify(seenReady) === JSON.stringify(ids) ? ready : null;
    },
    60_000,
  );
}

describe('warm pool', () => {
  it('a matching run takes a provisioned sandbox, skips provisioning, and the pool refills', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await pooledEnvironment(companyId, base);
    const pooled = await fullPool(env, 2);
    for (const lease of pooled) {
      expect(isPooledRunId(lease.heartbeatRunId)).toBe(true);
      expect(readFileSync(join(workspaceOf(lease), 'provision.log'), 'utf8')).toBe('provisioned\n');
    }

    const request = matchingRun(env, base);
    const ready = await h.client.startRunAndWaitReady(request);
    expect(pooled.map((l) => l.id)).toContain(ready.lease.id);
    expect(ready.lease.heartbeatRunId).toBe(request.heartbeatRunId);
    expect(ready.lease.metadata?.pool).toMatchObject({ state: 'taken' });
    const record = ready.lease.metadata!.workspaceRealization as WorkspaceRealizationRecord;
    expect(record.bootstrap).toMatchObject({ command: PROVISION, provisionedByPool: true });
    // Provisioned once, by the pool: the run did not run the command again.
    expect(readFileSync(join(record.remote.path, 'provision.log'), 'utf8')).toBe('provisioned\n');
    const out = await h.client.exec(companyId, request.heartbeatRunId, { command: 'cat', args: ['main.txt'] });
    expect(out.stdout).toBe('code\n');

    // The pool replaces what was taken; the taken one is the run's now.
    const refilled = await fullPool(env, 2);
    expect(refilled.map((l) => l.id)).not.toContain(ready.lease.id);
    const state = await h.admin.getPool(companyId, env.id);
    expect(state).toMatchObject({ size: 2, taken: 1 });
    // Ops see the same through the CLI.
    const cli = await runCli(h, ['env', 'pool', env.id, '--company', companyId, '--json']);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ size: 2, taken: 1, environmentId: env.id });
    await h.client.completeRun(companyId, request.heartbeatRunId, { status: 'succeeded' });
    await h.client.waitEnded(companyId, request.heartbeatRunId);
    expect(existsSync(record.remote.path)).toBe(false);
  });

  it('the take rides with the resolve step; behind a capacity gate it waits for the slot first', async () => {
    /** The run's steps up to its prepare, in order: `local:<type>` for a local activity's marker. */
    const stepsBeforePrepare = async (companyId: string, runId: string) => {
      const history = await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, runId)).fetchHistory();
      const steps: string[] = [];
      for (const e of history.events ?? []) {
        const scheduled = e.activityTaskScheduledEventAttributes?.activityType?.name;
        if (scheduled === 'prepareWorkspace') return steps;
        if (scheduled) steps.push(scheduled);
        const marker = e.markerRecordedEventAttributes;
        if (marker?.markerName === 'core_local_activity') {
          const data = marker.details?.data?.payloads?.[0]?.data;
          const type = data
            ? (JSON.parse(Buffer.from(data).toString()) as { activity_type?: string }).activity_type
            : '?';
          steps.push(`local:${type}`);
        }
      }
      throw new Error('no prepareWorkspace in the history');
    };
    for (const gated of [false, true]) {
      const companyId = uniqueId('co');
      const base = baseFolder();
      const env = await pooledEnvironment(companyId, base, 1, gated ? { maxConcurrentLeases: 5 } : {});
      await fullPool(env, 1);
      const request = matchingRun(env, base);
      const ready = await h.client.startRunAndWaitReady(request);
      expect(ready.lease.metadata?.pool, `gated ${gated}`).toMatchObject({ state: 'taken' });
      expect(await stepsBeforePrepare(companyId, request.heartbeatRunId)).toEqual(
        gated ? ['local:resolveEnvironment', 'requestSlot', 'local:takePooled'] : ['local:resolveEnvironment'],
      );
      await h.client.completeRun(companyId, request.heartbeatRunId, { status: 'succeeded' });
    }
  });

  it('concurrent runs never get the same sandbox; those beyond the pool acquire cold', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await pooledEnvironment(companyId, base);
    await fullPool(env, 2);
    const requests = Array.from({ length: 5 }, () => matchingRun(env, base));
    const results = await Promise.all(requests.map((r) => h.client.startRunAndWaitReady(r)));
    const ids = results.map((r) => r.lease.id);
    const sandboxes = results.map((r) => r.lease.providerLeaseId);
    expect(new Set(ids).size).toBe(5);
    expect(new Set(sandboxes).size).toBe(5);
    const warm = results.filter((r) => r.lease.metadata?.pool);
    expect(warm).toHaveLength(2);
    // A cold run provisioned its own sandbox; a warm one did not.
    for (const r of results) {
      const record = r.lease.metadata!.workspaceRealization as WorkspaceRealizationRecord;
      expect(Boolean(record.bootstrap.provisionedByPool)).toBe(Boolean(r.lease.metadata?.pool));
      expect(readFileSync(join(record.remote.path, 'provision.log'), 'utf8')).toBe('provisioned\n');
    }
    for (const r of requests) await h.client.completeRun(companyId, r.heartbeatRunId, { status: 'succeeded' });
  });

  it('a changed lockfile runs provisioning in the taken sandbox, and the pool rebuilds from the new base', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await pooledEnvironment(companyId, base, 1);
    const [before] = await fullPool(env, 1);
    writeFileSync(join(base, 'lock.txt'), 'deps v2\n');
    const request = matchingRun(env, base);
    const ready = await h.client.startRunAndWaitReady(request);
    expect(ready.lease.id).toBe(before!.id);
    const record = ready.lease.metadata!.workspaceRealization as WorkspaceRealizationRecord;
    expect(record.bootstrap.provisionedByPool).toBeUndefined();
    expect(readFileSync(join(record.remote.path, 'provision.log'), 'utf8')).toBe('provisioned\nprovisioned\n');
    expect(readFileSync(join(record.remote.path, 'lock.txt'), 'utf8')).toBe('deps v2\n');
    const [after] = await fullPool(env, 1);
    expect(after!.id).not.toBe(before!.id);
    expect((after!.metadata!.pool as { fingerprint: string }).fingerprint).not.toBe(
      (before!.metadata!.pool as { fingerprint: string }).fingerprint,
    );
    await h.client.completeRun(companyId, request.heartbeatRunId, { status: 'succeeded' });
  });

  it('a run with another provision command, or another lease policy, does not take from the pool', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await pooledEnvironment(companyId, base, 1);
    await fullPool(env, 1);
    const other = runRequest({
      companyId,
      environmentId: env.id,
      cwd: base,
      runtimeOverlay: { provisionCommand: 'true' },
    });
    const reused = runRequest({
      companyId,
      environmentId: env.id,
      cwd: base,
      leasePolicy: 'reuse_by_environment',
      runtimeOverlay: { provisionCommand: PROVISION },
    });
    for (const r of [other, reused]) {
      const ready = await h.client.startRunAndWaitReady(r);
      expect(ready.lease.metadata?.pool).toBeUndefined();
      await h.client.completeRun(companyId, r.heartbeatRunId, { status: 'succeeded' });
    }
    expect(await readyLeases(env)).toHaveLength(1);
  });

  it('archiving retires every pooled sandbox and ends the pool; a pool whose workflow is gone is reaped', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await pooledEnvironment(companyId, base, 2);
    const pooled = await fullPool(env, 2);
    await h.admin.archiveEnvironment(companyId, env.id);
    await until('the pool workflow to end', async () => {
      const d = await h.client.temporal.workflow.getHandle(poolWorkflowId(companyId, env.id)).describe();
      return d.status.name === 'COMPLETED';
    });
    expect(await pooledLeases(env)).toHaveLength(0);
    for (const lease of pooled) expect(existsSync(workspaceOf(lease))).toBe(false);

    const second = await pooledEnvironment(companyId, baseFolder(), 1);
    const [orphan] = await fullPool(second, 1);
    await h.client.temporal.workflow.getHandle(poolWorkflowId(companyId, second.id)).terminate('test: orphan the pool');
    const reaped = (await h.client.reaperRunOnce()).filter((r) => r.leaseId === orphan!.id);
    expect(reaped).toMatchObject([{ reason: 'reaped: pool workflow is terminated', cleanupStatus: 'success' }]);
    expect(existsSync(workspaceOf(orphan!))).toBe(false);
    // Nothing was synced back from a pooled sandbox into the base folder.
    expect(existsSync(join(base, 'provision.log'))).toBe(false);
  });

  it('a base whose provisioning fails leaves no lease behind and says why', async () => {
    const companyId = uniqueId('co');
    const base = baseFolder();
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'broken',
      driver: 'sandbox',
      config: {
        provider: 'fake',
        warmPool: { size: 1, base: { cwd: base, provisionCommand: 'echo no-registry >&2; exit 3' } },
      },
    });
    const state = await until(
      'the pool to report its failing fill',
      async () => {
        const pool = await h.admin.getPool(companyId, env.id);
        return pool?.note?.includes('no-registry') ? pool : null;
      },
      90_000,
    );
    expect(state.note).toMatch(/1 fill\(s\) failed in a row, the last: .*exited with code 3: no-registry/);
    expect(state.filled).toBe(0);
    await h.admin.archiveEnvironment(companyId, env.id);
    await until('the pool workflow to end', async () => {
      const d = await h.client.temporal.workflow.getHandle(poolWorkflowId(companyId, env.id)).describe();
      return d.status.name === 'COMPLETED';
    });
    expect(await h.store.listLeases(companyId, 'active')).toEqual([]);
  }, 120_000);

  it('refuses a pool whose base is outside the workspace roots, naming the field', async () => {
    await expect(
      h.admin.createEnvironment({
        companyId: uniqueId('co'),
        name: 'p',
        driver: 'sandbox',
        config: { provider: 'fake', warmPool: { size: 1, base: { cwd: '/etc', provisionCommand: null } } },
      }),
    ).rejects.toThrow(/config\.warmPool\.base\.cwd/);
    await expect(
      h.admin.createEnvironment({
        companyId: uniqueId('co'),
        name: 'p',
        driver: 'sandbox',
        config: { provider: 'fake', warmPool: { size: 0, base: { cwd: '/tmp' } } },
      }),
    ).rejects.toThrow(/warmPool\.size/);
  });
});
