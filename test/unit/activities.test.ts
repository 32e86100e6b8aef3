// Activities called directly (the SDK's activity context, a real database, the real fake provider):
// retries are idempotent and a driver that realizes nothing fails loudly.
import { MockActivityEnvironment } from '@temporalio/testing';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDrivers } from '../../drivers/registry.js';
import type { EnvironmentDriver } from '../../drivers/types.js';
import { createActivities } from '../../activities/index.js';
import { Store } from '../../store/store.js';
import {
  RunRequestSchema,
  type Environment,
  type RunRequest,
  type WorkspaceRealizationRecord,
} from '../../contracts/index.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createFakeProvider } from '../../drivers/providers/fake.js';
import { ProviderRegistry } from '../../drivers/providers/load.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { tempWorkspace } from '../support/runs.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
const dataDir = join(inject('tmpRoot'), uniqueId('acts'));
const providers = createProviders({ dataDir });

beforeAll(async () => {
  db = await freshDatabase();
  store = new Store(db.db);
});
afterAll(async () => {
  await db?.close();
});

/** Runs an activity as attempt N of workflow W, in the SDK's activity context. */
const env = (attempt: number, workflowId: string) => ({
  run: <A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A): Promise<R> =>
    new MockActivityEnvironment({ attempt, workflowExecution: { workflowId, runId: 'r' } } as never).run(
      fn,
      ...args,
    ) as Promise<R>,
});

async function sandboxEnvironment(companyId: string): Promise<Environment> {
  return store.createEnvironment({
    companyId,
    name: 'fake',
    driver: 'sandbox',
    config: { provider: 'fake', reuseLease: false },
  });
}

describe('acquireLease', () => {
  const acts = () => createActivities({ store, drivers: createDrivers(providers) });

  it('a retried attempt returns the same lease and the same provider resource', async () => {
    const companyId = uniqueId('co');
    const environment = await sandboxEnvironment(companyId);
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-1',
      environmentId: environment.id,
      workspace: { baseCwd: '/w', cwd: '/w' },
    });
    const first = await env(1, 'wf-a').run(acts().acquireLease, { request, environmentId: environment.id });
    const second = await env(2, 'wf-a').run(acts().acquireLease, { request, environmentId: environment.id });
    expect(second.id).toBe(first.id);
    expect(second.providerLeaseId).toBe(first.providerLeaseId);
    expect(await store.listRunLeases(companyId, 'run-1')).toHaveLength(1);
    expect(readdirSync(join(dataDir, 'sandboxes', 'fake', 'leases', 'run-1'))).toHaveLength(1);
  });

  it('an acquire that lands after its run gave up frees what it made; the ended lease stays ended', async () => {
    const companyId = uniqueId('co');
    const environment = await sandboxEnvironment(companyId);
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'late',
      environmentId: environment.id,
      workspace: { baseCwd: '/w', cwd: '/w' },
    });
    // The provider makes the sandbox, then the attempt stalls; meanwhile the run gives up and its release
    // ends the lease (no resource was recorded on it yet, so there was nothing for the release to free).
    let resume!: () => void;
    const stalled = new Promise<void>((r) => (resume = r));
    let made!: () => void;
    const madeIt = new Promise<void>((r) => (made = r));
    const fake = createFakeProvider({ rootDir: join(dataDir, 'sandboxes', 'fake') });
    const slow = new ProviderRegistry([
      {
        ...fake,
        acquireLease: async (...args: Parameters<typeof fake.acquireLease>) => {
          const acquired = await fake.acquireLease(...args);
          made();
          await stalled;
          return acquired;
        },
      },
    ]);
    const acquiring = env(1, 'wf-late')
      .run(createActivities({ store, drivers: createDrivers(slow) }).acquireLease, {
        request,
        environmentId: environment.id,
      })
      .catch((e: unknown) => e);
    await madeIt;
    const [row] = await store.listRunLeases(companyId, 'late');
    await store.updateLease(row!.id, { status: 'failed', releasedAt: new Date(), cleanupStatus: 'success' });
    resume();
    expect(await acquiring).toMatchObject({ type: 'lease_acquire_failed', nonRetryable: true });
    const [lease] = await store.listRunLeases(companyId, 'late');
    expect(lease).toMatchObject({ status: 'failed', providerLeaseId: null });
    expect(lease!.metadata).toMatchObject({ lateAcquire: 'freed' });
    // The sandbox it made is gone: nothing is left that no lease points at.
    const leaseDir = join(dataDir, 'sandboxes', 'fake', 'leases', 'late');
    expect(existsSync(leaseDir) ? readdirSync(leaseDir) : []).toEqual([]);
  });

  it('after a crash between the lease row and the provider call, the retry adopts the row', async () => {
    const companyId = uniqueId('co');
    const environment = await sandboxEnvironment(companyId);
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-2',
      environmentId: environment.id,
      workspace: { baseCwd: '/w', cwd: '/w' },
    });
    const orphan = await store.insertLease({
      companyId,
      environmentId: environment.id,
      executionWorkspaceId: null,
      issueId: null,
      heartbeatRunId: 'run-2',
      leasePolicy: 'ephemeral',
      provider: 'fake',
      metadata: null,
      expiresAt: null,
    });
    const lease = await env(2, 'wf-b').run(acts().acquireLease, { request, environmentId: environment.id });
    expect(lease.id).toBe(orphan.id);
    expect(lease.providerLeaseId).toMatch(/^fake:\/\/run-2\//);
    expect(await store.listRunLeases(companyId, 'run-2')).toHaveLength(1);
  });
});

describe('exactly-once create with bubblewrap', () => {
  it('one run, many attempts (one dying after it created the sandbox), exactly one sandbox', async () => {
    const acts = createActivities({ store, drivers: createDrivers(providers) });
    const companyId = uniqueId('co');
    const environment = await store.createEnvironment({
      companyId,
      name: 'bw',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-bw',
      environmentId: environment.id,
      workspace: { baseCwd: '/w', cwd: '/w' },
    });
    // Attempt 1 made the sandbox, then its worker died before recording it: only the provider call happened.
    const bubblewrap = providers.get('bubblewrap')!;
    await bubblewrap.acquireLease((await bubblewrap.validateConfig({ provider: 'bubblewrap' })).config, {
      companyId,
      environmentId: environment.id,
      heartbeatRunId: 'run-bw',
      leaseId: 'lease-bw',
      agentId: null,
      adapterType: 'process',
      executionWorkspaceId: null,
      issueId: null,
      requestedExpiresAt: null,
      attempt: 1,
      idempotencyKey: 'wf-bw',
      reuseKey: null,
    });
    const leases = [];
    for (const attempt of [2, 3, 4, 5])
      leases.push(await env(attempt, 'wf-bw').run(acts.acquireLease, { request, environmentId: environment.id }));
    expect(new Set(leases.map((l) => l.id)).size).toBe(1);
    expect(new Set(leases.map((l) => l.providerLeaseId)).size).toBe(1);
    expect(leases[0]!.metadata).toHaveProperty('provider.adopted', true);
    expect(readdirSync(join(dataDir, 'sandboxes', 'bubblewrap')).filter((d) => d.startsWith('run-bw'))).toHaveLength(1);
    expect(await store.listRunLeases(companyId, 'run-bw')).toHaveLength(1);
  });
});

/** The prepare step of a run that realizes, on its lease. */
const prepare = (leaseId: string, request: RunRequest, environmentId: string) => ({
  request,
  environmentId,
  leaseId,
  realizes: true,
  leaseTtlMs: 3_600_000,
});

describe('prepareWorkspace: realize', () => {
  it('fails a driver that returns no realization record instead of persisting nothing', async () => {
    const drivers = createDrivers(providers);
    const silent: EnvironmentDriver = { ...drivers.local!, realize: async () => null };
    const acts = createActivities({ store, drivers: { ...drivers, local: silent } });
    const companyId = uniqueId('co');
    const environment = await store.ensureLocalEnvironment(companyId);
    const cwd = tempWorkspace();
    const request = RunRequestSchema.parse({ companyId, heartbeatRunId: 'run-3', workspace: { baseCwd: cwd, cwd } });
    const lease = await env(1, 'wf-c').run(acts.acquireLease, { request, environmentId: environment.id });
    await expect(
      env(1, 'wf-c').run(acts.prepareWorkspace, prepare(lease.id, request, environment.id)),
    ).rejects.toMatchObject({
      type: 'workspace_realization_failed',
      message: 'driver local returned no workspace realization record',
      nonRetryable: false,
    });
    const [stored] = await store.listRunLeases(companyId, 'run-3');
    expect(stored!.metadata ?? {}).not.toHaveProperty('workspaceRealization');
  });

  it('git_worktree: makes the worktree on its branch, and a retry adopts it', async () => {
    const repo = tempWorkspace();
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], {
        env: {
          PATH: process.env.PATH!,
          GIT_AUTHOR_NAME: 't',
          GIT_AUTHOR_EMAIL: 't@t',
          GIT_COMMITTER_NAME: 't',
          GIT_COMMITTER_EMAIL: 't@t',
          HOME: repo,
        },
      })
        .toString()
        .trim();
    git('init', '-q', '-b', 'main');
    writeFileSync(join(repo, 'app.txt'), 'v1');
    git('add', '.');
    git('commit', '-qm', 'init');
    const worktreePath = `${repo}-wt`;
    const acts = createActivities({ store, drivers: createDrivers(providers) });
    const companyId = uniqueId('co');
    const environment = await store.ensureLocalEnvironment(companyId);
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-4',
      workspace: {
        baseCwd: repo,
        cwd: worktreePath,
        strategy: 'git_worktree',
        branchName: 'agent/run-4',
        worktreePath,
      },
      runtimeOverlay: { provisionCommand: 'git rev-parse --abbrev-ref HEAD > branch.txt' },
    });
    const lease = await env(1, 'wf-d').run(acts.acquireLease, { request, environmentId: environment.id });
    const recordOf = (prepared: { lease: { metadata: Record<string, unknown> | null } }) =>
      prepared.lease.metadata?.workspaceRealization as WorkspaceRealizationRecord;
    const first = await env(1, 'wf-d').run(acts.prepareWorkspace, prepare(lease.id, request, environment.id));
    expect(recordOf(first).local).toEqual({ path: worktreePath, strategy: 'git_worktree', branchName: 'agent/run-4' });
    expect(first.executionTarget).toMatchObject({ kind: 'local', cwd: worktreePath });
    expect(existsSync(join(worktreePath, 'app.txt'))).toBe(true);
    const again = await env(2, 'wf-d').run(acts.prepareWorkspace, prepare(lease.id, request, environment.id));
    expect(recordOf(again).local.path).toBe(worktreePath);
    expect(
      execFileSync('cat', [join(worktreePath, 'branch.txt')])
        .toString()
        .trim(),
    ).toBe('agent/run-4');
    expect(git('worktree', 'list').split('\n')).toHaveLength(2);
  });

  it('a provision command that outlives its timeout fails the step and is killed', async () => {
    const acts = createActivities({ store, drivers: createDrivers(providers) });
    const companyId = uniqueId('co');
    const environment = await store.ensureLocalEnvironment(companyId);
    const cwd = tempWorkspace();
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-5',
      workspace: { baseCwd: cwd, cwd },
      provisionTimeoutMs: 300,
      runtimeOverlay: { provisionCommand: 'sleep 5; touch late' },
    });
    const lease = await env(1, 'wf-e').run(acts.acquireLease, { request, environmentId: environment.id });
    const started = Date.now();
    await expect(
      env(1, 'wf-e').run(acts.prepareWorkspace, prepare(lease.id, request, environment.id)),
    ).rejects.toMatchObject({
      type: 'workspace_realization_failed',
      message: 'provision command timed out after 300 ms',
    });
    expect(Date.now() - started).toBeLessThan(4000);
    await new Promise((r) => setTimeout(r, 5500));
    expect(existsSync(join(cwd, 'late'))).toBe(false);
  }, 20_000);
});
