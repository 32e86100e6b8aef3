// One company can never read, lease or release another company's environments, leases or runs. Company A
// holds a ready run, a retained lease and a run awaiting retry; company B tries every company-scoped client
// path and the CLI on A's ids. Afterwards A's rows and runs are exactly as they were, and A still controls them.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError, NotFoundError } from '../../client/errors.js';
import type { Environment, EnvironmentLease, ExecutionWorkspace } from '../../contracts/index.js';
import { runCli, type CliResult } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runRequest, tempWorkspace, until } from '../support/runs.js';

const A = uniqueId('co-a');
const B = uniqueId('co-b');
let h: Harness;
let envA: Environment;
let flakyA: Environment;
let wsA: ExecutionWorkspace;
let retainedA: EnvironmentLease;
let snapshot: unknown;

/** Everything company A has, as the store and its workflows report it. */
async function stateOfA() {
  return {
    environments: await h.store.listEnvironments(A),
    leases: await h.store.listLeases(A),
    activity: await h.store.listActivity(A),
    workspace: await h.store.getExecutionWorkspace(A, wsA.id),
    ready: await h.client.getRun(A, 'ready'),
    stuck: await h.client.getRun(A, 'stuck'),
  };
}

function envrun(args: string[]): Promise<CliResult> {
  return runCli(h, args);
}

beforeAll(async () => {
  h = await createHarness();
  envA = await h.admin.createEnvironment({
    companyId: A,
    name: 'a-sbx',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  flakyA = await h.admin.createEnvironment({
    companyId: A,
    name: 'a-flaky',
    driver: 'sandbox',
    config: { provider: 'fake', faults: { realize: { fail: 'always' } } },
  });
  wsA = await h.admin.createExecutionWorkspace({
    companyId: A,
    name: 'a-ws',
    cwd: tempWorkspace(),
    config: { environmentId: envA.id },
  });
  await h.client.startRunAndWaitReady(
    runRequest({ companyId: A, heartbeatRunId: 'ready', environmentId: envA.id, executionWorkspaceId: wsA.id }),
  );
  await h.client.startRunAndWaitReady(
    runRequest({ companyId: A, heartbeatRunId: 'kept', environmentId: envA.id, leasePolicy: 'retain_on_failure' }),
  );
  await h.client.completeRun(A, 'kept', { status: 'failed', failureReason: 'inspect me' });
  retainedA = (await h.store.listRunLeases(A, 'kept'))[0]!;
  expect(retainedA.status).toBe('retained');
  await h.client.startRun(
    runRequest({ companyId: A, heartbeatRunId: 'stuck', environmentId: flakyA.id, awaitRetryMs: 600_000 }),
  );
  await until(
    "A's run awaiting retry in visibility",
    async () => (await h.client.listRuns({ companyId: A, phase: 'awaiting_retry' })).length === 1,
  );
  snapshot = await stateOfA();
});
afterAll(async () => {
  await h?.close();
});

describe('company B against company A', () => {
  it('reads nothing of A: environments, leases, activity, workspaces, runs', async () => {
    expect(await h.admin.listEnvironments(B)).toEqual([]);
    expect(await h.admin.listLeases(B)).toEqual([]);
    expect(await h.admin.listLeases(B, 'retained')).toEqual([]);
    expect(await h.store.listActivity(B)).toEqual([]);
    expect(await h.store.getEnvironment(B, envA.id)).toBeNull();
    expect(await h.store.getLease(B, retainedA.id)).toBeNull();
    expect(await h.store.getExecutionWorkspace(B, wsA.id)).toBeNull();
    expect(await h.client.getRun(B, 'ready')).toBeNull();
    expect(await h.client.listRuns({ companyId: B })).toEqual([]);
    expect(await h.client.listRuns({ companyId: B, environmentId: flakyA.id })).toEqual([]);
  });

  it("cannot lease A's environment or execution workspace; a run with the same id as A's gets its own lease", async () => {
    const onEnv = runRequest({ companyId: B, heartbeatRunId: 'on-a-env', environmentId: envA.id });
    expect((await expectRunError(h.client.startRunAndWaitReady(onEnv), 'environment_not_found')).environmentId).toBe(
      envA.id,
    );
    const onWs = runRequest({ companyId: B, heartbeatRunId: 'via-ws', executionWorkspaceId: wsA.id });
    expect((await expectRunError(h.client.startRunAndWaitReady(onWs), 'invalid_request')).message).toContain(
      `execution workspace ${wsA.id} not found`,
    );
    expect(await h.store.listLeases(B)).toEqual([]);

    // A's run "kept" holds a retained lease: B's own "kept" neither adopts it nor conflicts with it.
    const own = await h.client.startRunAndWaitReady(runRequest({ companyId: B, heartbeatRunId: 'kept' }));
    expect(own.lease).toMatchObject({ companyId: B, heartbeatRunId: 'kept', status: 'active' });
    expect(own.lease.id).not.toBe(retainedA.id);
    expect(own.lease.environmentId).not.toBe(envA.id);
    await h.client.completeRun(B, 'kept', { status: 'succeeded' });
    expect((await h.store.listLeases(B)).map((l) => l.status)).toEqual(['released']);
  });

  it('cannot get, update, archive or probe A\'s environment by id, nor point a workspace at it: "not found", as for a missing id', async () => {
    const before = await h.store.getEnvironmentById(envA.id);
    expect(before).toMatchObject({ companyId: A, status: 'active' });
    const notFound = (id: string) => `environment ${id} of company ${B} not found`;
    const attempts: [string, () => Promise<unknown>][] = [
      ['get', () => h.admin.getEnvironment(B, envA.id)],
      [
        'update',
        () =>
          h.admin.updateEnvironment(B, envA.id, {
            config: { provider: 'fake', faults: { acquire: { fail: 'always' } } },
            name: 'hijacked',
          }),
      ],
      ['archive', () => h.admin.archiveEnvironment(B, envA.id)],
      ['probe', () => h.admin.probeEnvironment(B, envA.id)],
    ];
    for (const [what, attempt] of attempts) {
      const err = await attempt().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(NotFoundError);
      expect((err as Error).message, what).toBe(notFound(envA.id));
    }
    // Exactly what an id that exists nowhere gets: nothing tells B that A's id is taken.
    const missing = randomUUID();
    const err = await h.admin.getEnvironment(B, missing).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as Error).message).toBe(notFound(missing));
    // An execution workspace of B cannot name A's environment either.
    const ws = h.admin.createExecutionWorkspace({
      companyId: B,
      name: 'b-ws',
      cwd: tempWorkspace(),
      config: { environmentId: envA.id },
    });
    await expect(ws).rejects.toThrow(InvalidInputError);
    await expect(ws).rejects.toThrow(`config.environmentId: environment ${envA.id} of company ${B} not found`);
    const { rows } = await h.database.pool.query(
      'select count(*)::int as n from execution_workspaces where company_id = $1',
      [B],
    );
    expect(rows[0].n).toBe(0);

    expect(await h.store.getEnvironmentById(envA.id)).toEqual(before);
    expect(await h.admin.getEnvironment(A, envA.id)).toEqual(before); // A still reads its own
  });

  it('the CLI as B: env update/archive/probe of A\'s environment exit 1 "not found"; the row is unchanged and active', async () => {
    const before = await h.store.getEnvironmentById(envA.id);
    for (const args of [
      ['update', envA.id, '--config', '{"provider":"fake","faults":{"acquire":{"fail":"always"}}}'],
      ['archive', envA.id],
      ['probe', envA.id],
    ]) {
      const res = await envrun(['env', ...args, '--company', B, '--json']);
      expect(res.code, res.stderr).toBe(1);
      // Under --json the error is JSON on stdout too: the same words, nothing of A's environment.
      expect(JSON.parse(res.stdout)).toEqual({
        error: { code: 'not_found', message: `environment ${envA.id} of company ${B} not found` },
        exitCode: 1,
      });
      expect(res.stderr).toBe(`envrun: environment ${envA.id} of company ${B} not found\n`);
    }
    const after = await h.store.getEnvironmentById(envA.id);
    expect(after).toEqual(before);
    expect(after?.status).toBe('active');
    expect((await h.client.getRun(A, 'ready'))?.phase).toBe('ready'); // archiving would have cancelled it
  });

  it("cannot release, renew, complete, cancel, retry or exec in A's leases and runs", async () => {
    await expect(h.admin.releaseRetainedLease(B, retainedA.id)).rejects.toThrow(NotFoundError);
    await expect(h.client.renewRun(B, 'ready')).rejects.toThrow(NotFoundError);
    await expect(h.client.completeRun(B, 'ready', { status: 'failed', failureReason: 'hijack' })).rejects.toThrow(
      NotFoundError,
    );
    await expect(h.client.retryRealization(B, 'stuck')).rejects.toThrow(NotFoundError);
    await expect(h.client.cancelRun(B, 'ready')).rejects.toThrow(NotFoundError);
    const sentinel = join(tempWorkspace(), 'b-was-here');
    await expect(h.admin.exec(B, 'ready', { command: 'touch', args: [sentinel], env: {} })).rejects.toThrow(
      NotFoundError,
    );
    expect(existsSync(sentinel)).toBe(false);
    // A bulk retry filtered to B (or to B and A's environment) retries none of A's runs.
    expect(await h.client.retryAwaiting({ companyId: B })).toEqual([]);
    expect(await h.client.retryAwaiting({ companyId: B, environmentId: flakyA.id })).toEqual([]);
  });

  it('the CLI as B: lease release, run complete/cancel/renew exit 1 "not found"; lease list shows nothing of A', async () => {
    const released = await envrun(['lease', 'release', retainedA.id, '--company', B]);
    expect(released.code, released.stderr).toBe(1);
    expect(released.stderr).toContain(`lease ${retainedA.id} of company ${B} not found`);
    for (const cmd of ['complete', 'cancel', 'renew']) {
      const res = await envrun(['run', cmd, '--company', B, '--run', 'ready']);
      expect(res.code, res.stderr).toBe(1);
      expect(res.stderr).toContain(`run ready of company ${B} not found`);
    }
    const leases = await envrun(['lease', 'list', '--company', B, '--json']);
    expect(JSON.parse(leases.stdout).map((l: EnvironmentLease) => l.companyId)).toEqual([B]); // B's own, released
  });

  it("afterwards A's rows and runs are exactly as they were, and A still controls them", async () => {
    expect(await stateOfA()).toEqual(snapshot);
    expect(
      (await h.client.completeRun(A, 'ready', { status: 'succeeded' })).releasedLeases.map((l) => l.status),
    ).toEqual(['released']);
    expect((await h.admin.releaseRetainedLease(A, retainedA.id)).status).toBe('released');
    await h.client.cancelRun(A, 'stuck');
    expect(await h.store.listLeases(A, 'active')).toEqual([]);
  });
});
