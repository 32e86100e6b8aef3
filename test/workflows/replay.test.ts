// Determinism: recorded histories replay against today's workflow code without a non-determinism error.
// The committed fixtures were recorded from real runs with `temporal workflow show --output json`, from the
// workflow as first released (0.1.0 was never released: its interim shapes were dropped, not patched).
// After a change guarded by `patched()`, ENVRUN_RECORD_HISTORY=v2 records a new set beside this one,
// `history-<scenario>-v2.json`; add its version to FIXTURE_SETS, and every set keeps replaying.
import { Worker } from '@temporalio/worker';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { poolWorkflowId, runWorkflowId } from '../../contracts/index.js';
import { ensureTemporalCli } from '../../scripts/temporal-cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { historyText } from '../support/history.js';
import { expectRunError, runEnd, runRequest, tempWorkspace, until } from '../support/runs.js';

const runRequestMarker = '"heartbeatRunId"';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}.json`, import.meta.url));
let h: Harness;

beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

async function recordedScenarios(): Promise<Record<string, string>> {
  const ready = runRequest();
  await h.client.startRunAndWaitReady(ready);
  await h.client.completeRun(ready.companyId, ready.heartbeatRunId, { status: 'succeeded' });

  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'f',
    driver: 'sandbox',
    config: { provider: 'fake', faults: { realize: { fail: 'always' } } },
  });
  const failed = runRequest({ companyId, environmentId: env.id });
  await expectRunError(h.client.startRunAndWaitReady(failed), 'workspace_realization_failed');
  await runEnd(h, failed.companyId, failed.heartbeatRunId);

  const cancelled = runRequest();
  await h.client.startRunAndWaitReady(cancelled);
  await h.client.cancelRun(cancelled.companyId, cancelled.heartbeatRunId);

  // Commands: one that ends (exit 3), one started twice by id, one detached that release ends.
  const execEnv = await h.admin.createEnvironment({
    companyId,
    name: 'x',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const exec = runRequest({ companyId, environmentId: execEnv.id });
  await h.client.startRunAndWaitReady(exec);
  const ended = await h.client.exec(companyId, exec.heartbeatRunId, { command: 'sh', args: ['-c', 'echo hi; exit 3'] });
  expect(ended).toMatchObject({ status: 'exited', exitCode: 3 });
  await h.client.exec(companyId, exec.heartbeatRunId, { command: 'true', commandId: 'twice' });
  await h.client.exec(companyId, exec.heartbeatRunId, { command: 'true', commandId: 'twice' });
  await h.client.exec(companyId, exec.heartbeatRunId, {
    command: 'sleep',
    args: ['60'],
    commandId: 'long',
    wait: false,
  });
  await h.admin.getCommand(companyId, exec.heartbeatRunId, null);
  await h.client.completeRun(companyId, exec.heartbeatRunId, { status: 'succeeded' });
  await runEnd(h, companyId, exec.heartbeatRunId);

  // A warm pool: a run that takes a pooled sandbox (patch `warm-pool`), and the pool's own workflow from
  // its first fill to its end (archived).
  const base = tempWorkspace();
  const poolEnv = await h.admin.createEnvironment({
    companyId,
    name: 'p',
    driver: 'sandbox',
    config: { provider: 'fake', warmPool: { size: 1, base: { cwd: base, provisionCommand: 'true' } } },
  });
  const warm = runRequest({
    companyId,
    environmentId: poolEnv.id,
    cwd: base,
    runtimeOverlay: { provisionCommand: 'true' },
  });
  await until('a ready pooled sandbox', async () =>
    (await h.store.listPooledLeases(companyId, poolEnv.id)).some((l) => l.metadata?.pool),
  );
  const taken = await h.client.startRunAndWaitReady(warm);
  expect(taken.lease.metadata?.pool).toMatchObject({ state: 'taken' });
  await h.client.completeRun(companyId, warm.heartbeatRunId, { status: 'succeeded' });
  await runEnd(h, companyId, warm.heartbeatRunId);
  await until('the pool to refill', async () =>
    (await h.store.listPooledLeases(companyId, poolEnv.id)).some(
      (l) => (l.metadata?.pool as { state?: string } | undefined)?.state === 'ready',
    ),
  );
  await h.admin.archiveEnvironment(companyId, poolEnv.id);
  const pool = h.client.temporal.workflow.getHandle(poolWorkflowId(companyId, poolEnv.id));
  await pool.result();
  return {
    'history-warm': runWorkflowId(companyId, warm.heartbeatRunId),
    'history-pool': poolWorkflowId(companyId, poolEnv.id),
    'history-exec': runWorkflowId(companyId, exec.heartbeatRunId),
    'history-completed': runWorkflowId(ready.companyId, ready.heartbeatRunId),
    'history-realization-failed': runWorkflowId(failed.companyId, failed.heartbeatRunId),
    'history-cancelled': runWorkflowId(cancelled.companyId, cancelled.heartbeatRunId),
  };
}

it('replays fresh histories of a completed, a failed and a cancelled run', async () => {
  // A secret in the worker's environment must never reach a workflow history.
  process.env.ENVRUN_HOST_SECRET = 'hunter2-host-secret';
  const scenarios = await recordedScenarios();
  const cli = await ensureTemporalCli();
  for (const [name, workflowId] of Object.entries(scenarios)) {
    const json = execFileSync(cli, [
      'workflow',
      'show',
      '--address',
      inject('temporalAddress'),
      '--workflow-id',
      workflowId,
      '--output',
      'json',
    ]).toString();
    const text = historyText(json);
    // Decoded payloads are searched, not just base64 (a pool's history holds no run request).
    expect(text).toContain(name === 'history-pool' ? '"environmentId"' : runRequestMarker);
    expect(text).not.toContain('hunter2-host-secret');
    const version = process.env.ENVRUN_RECORD_HISTORY;
    if (version) writeFileSync(fixture(`${name}-${version}`), json);
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundle') }, replayName: name },
      JSON.parse(json),
    );
  }
});

const scenarios = ['history-completed', 'history-realization-failed', 'history-cancelled'];
const FIXTURE_SETS = ['v1'];
// Runs with commands: v1 from before durable commands (exec answered with the output; release ended a
// running command), v2 with them (patch `durable-commands`).
const EXEC_FIXTURES = ['history-exec-v1', 'history-exec-v2'];
// Warm pools (patch `warm-pool`): a run that took a pooled sandbox, and a pool from its start to its end;
// warm v2: the take made by the resolve step (its marker's `taken`), no take step of its own.
const POOL_FIXTURES = ['history-warm-v1', 'history-pool-v1', 'history-warm-v2'];
it.each([...FIXTURE_SETS.flatMap((set) => scenarios.map((s) => `${s}-${set}`)), ...EXEC_FIXTURES, ...POOL_FIXTURES])(
  'replays the committed %s fixture',
  async (name) => {
    expect(existsSync(fixture(name)), `missing fixture ${name}: record with ENVRUN_RECORD_HISTORY=<version>`).toBe(
      true,
    );
    const history = JSON.parse(readFileSync(fixture(name), 'utf8'));
    expect(history.events.length).toBeGreaterThan(10);
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundle') }, replayName: name },
      history,
    );
  },
);
