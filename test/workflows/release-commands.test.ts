// Release ends the run's commands first (patch `release-ends-commands`): an exec still running when the
// run is completed is cancelled and waited for, its command killed, before the release step is scheduled;
// the history that does so replays.
import { Worker } from '@temporalio/worker';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runWorkflowId } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runEnd, runRequest, until } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

describe('release ends the run commands first', () => {
  it('a command still running at completion is cancelled, killed and waited for; the history replays', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'f',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const ready = await h.client.startRunAndWaitReady(req);
    const workspace = join(String((ready.lease.metadata?.provider as { root: string }).root), 'workspace');
    const started = Date.now();
    const command = h.admin
      .exec(companyId, req.heartbeatRunId, { command: 'sh', args: ['-c', 'touch started; exec sleep 120'] })
      .then(
        (result) => ({ result, at: Date.now() }),
        (err: Error) => ({ result: err, at: Date.now() }),
      );
    await until('the command to start', async () => existsSync(join(workspace, 'started')));
    const after = await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(after.error).toBeNull();
    const ended = await command;
    expect(String(ended.result)).toMatch(/the command was ended: the run is releasing its lease/);
    expect(ended.at - started).toBeLessThan(30_000);
    await runEnd(h, companyId, req.heartbeatRunId);

    const history = await h.client.temporal.workflow
      .getHandle(runWorkflowId(companyId, req.heartbeatRunId))
      .fetchHistory();
    const events = history.events ?? [];
    const index = (pred: (e: (typeof events)[number]) => boolean) => events.findIndex(pred);
    const marker = index((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch');
    const cancelled = index((e) => Boolean(e.activityTaskCanceledEventAttributes));
    const releaseScheduled = index(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'releaseLease',
    );
    expect(marker).toBeGreaterThan(0);
    expect(cancelled).toBeGreaterThan(marker);
    expect(releaseScheduled).toBeGreaterThan(cancelled); // the command was over before release began
    await Worker.runReplayHistory(
      { workflowBundle: { codePath: inject('workflowBundle') }, replayName: 'release-ends-commands' },
      history,
    );
  });
});
