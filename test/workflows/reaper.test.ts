// The reaper releases what no run will release, deletes command journals past their retention, and archiving
// an environment releases its leases first.
import { Worker } from '@temporalio/worker';
import { defaultPayloadConverter } from '@temporalio/common';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { ACTIVITY_ACTIONS, runWorkflowId, type EnvironmentLease } from '../../contracts/index.js';
import { REAPER_SCHEDULE_ID } from '../../client/reaper-schedule.js';
import { ensureTemporalCli } from '../../scripts/temporal-cli.js';
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

/** One sweep under a known workflow id; its result and history. */
async function sweep() {
  const workflowId = uniqueId('envrun-reaper-test');
  const reaped = await h.client.temporal.workflow.execute('reaper', { taskQueue: h.taskQueue, workflowId, args: [] });
  return { workflowId, reaped, history: await h.client.temporal.workflow.getHandle(workflowId).fetchHistory() };
}

it('a sweep deletes the journals kept past ENVRUN_COMMAND_RETENTION after their release, never a running one', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'e',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const endedCommand = async (run: string) => {
    await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: run, environmentId: env.id }));
    const out = await h.client.exec(companyId, run, {
      command: 'sh',
      args: ['-c', 'echo journal-line'],
      commandId: 'c',
    });
    expect(out).toMatchObject({ status: 'exited', exitCode: 0 });
    await h.client.completeRun(companyId, run, { status: 'succeeded' });
    await runEnd(h, companyId, run);
    const row = (await h.store.getCommandRow({ companyId, heartbeatRunId: run, commandId: 'c' }))!;
    expect(await h.store.getLease(companyId, row.leaseId!)).toMatchObject({ status: 'released' });
    return row;
  };
  const old = await endedCommand('old');
  const recent = await endedCommand('recent');
  // A row still running on the old lease (its step never said how it ended), and one that never had a lease.
  const running = await h.store.openCommand({
    companyId,
    heartbeatRunId: 'old',
    commandId: 'still-running',
    leaseId: old.leaseId,
    hostId: null,
    command: 'sleep',
    args: [],
  });
  const leaseless = await h.store.openCommand({
    companyId,
    heartbeatRunId: 'no-lease',
    commandId: 'c',
    leaseId: null,
    hostId: null,
    command: 'true',
    args: [],
  });
  await h.store.finishCommand(leaseless.row.key, {
    status: 'exited',
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
  });
  const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000);
  await h.store.pool.query('update environment_leases set released_at = $2 where id = $1', [old.leaseId, hoursAgo(3)]);
  await h.store.pool.query('update environment_leases set released_at = $2 where id = $1', [
    recent.leaseId,
    hoursAgo(1),
  ]);
  await h.store.pool.query('update commands set ended_at = $2 where key = $1', [leaseless.row.key, hoursAgo(3)]);
  const chunks = async (key: string) =>
    Number(
      (
        await h.store.pool.query<{ n: string }>('select count(*) as n from command_output where command_key = $1', [
          key,
        ])
      ).rows[0]!.n,
    );
  expect(await chunks(old.key)).toBeGreaterThan(0);

  const before = process.env.ENVRUN_COMMAND_RETENTION;
  process.env.ENVRUN_COMMAND_RETENTION = '2h'; // the worker of this suite runs in this process
  try {
    const { history } = await sweep();
    // The count is the step's result in the sweep's history (and a worker log line).
    const events = history.events ?? [];
    const scheduled = events.find(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'deleteExpiredCommands',
    )!;
    const completed = events.find(
      (e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(scheduled.eventId),
    )!;
    const payload = completed.activityTaskCompletedEventAttributes!.result!.payloads![0]!;
    expect(defaultPayloadConverter.fromPayload<number>(payload)).toBeGreaterThanOrEqual(2);
  } finally {
    if (before === undefined) delete process.env.ENVRUN_COMMAND_RETENTION;
    else process.env.ENVRUN_COMMAND_RETENTION = before;
  }
  expect(await h.store.getCommandRow({ companyId, heartbeatRunId: 'old', commandId: 'c' })).toBeNull();
  expect(await chunks(old.key)).toBe(0);
  expect(await h.store.getCommandRow({ companyId, heartbeatRunId: 'no-lease', commandId: 'c' })).toBeNull();
  const kept = await h.admin.commandOutput(companyId, 'recent', 'c');
  expect(kept.stdout.toString()).toBe('journal-line\n');
  expect(await h.store.getCommandRow({ companyId, heartbeatRunId: 'old', commandId: 'still-running' })).toMatchObject({
    key: running.row.key,
    status: 'running',
  });
  // With the default retention (7 days) the recent journal stays too.
  await sweep();
  expect(await h.store.getCommandRow({ companyId, heartbeatRunId: 'recent', commandId: 'c' })).not.toBeNull();
});

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}.json`, import.meta.url));

// v1: a sweep that released one lease, recorded before the retention step (patch `reaper-command-retention`);
// v2: the same with it.
it('sweeps recorded before and after command retention replay, and so does a sweep of today', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'e',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  await orphanedRun(companyId, env.id, 'orphan');
  const { workflowId, reaped, history } = await sweep();
  expect(reaped).toContainEqual(expect.objectContaining({ companyId, heartbeatRunId: 'orphan' }));
  await Worker.runReplayHistory(
    { workflowBundle: { codePath: inject('workflowBundle') }, replayName: 'reaper-today' },
    history,
  );
  // ENVRUN_RECORD_HISTORY=<version> records it as history-reaper-<version>.json (as replay.test.ts does).
  const version = process.env.ENVRUN_RECORD_HISTORY;
  if (version) {
    const json = execFileSync(await ensureTemporalCli(), [
      'workflow',
      'show',
      '--address',
      inject('temporalAddress'),
      '--workflow-id',
      workflowId,
      '--output',
      'json',
    ]).toString();
    writeFileSync(fixture(`history-reaper-${version}`), json);
  }
  // Every committed sweep replays.
  for (const name of ['history-reaper-v1', 'history-reaper-v2'])
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundle') }, replayName: name },
      JSON.parse(readFileSync(fixture(name), 'utf8')),
    );
});
