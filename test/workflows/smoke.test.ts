import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

it('runs a local run to ready and releases it on complete', async () => {
  const cwd = mkdtempSync(join(tmpdir(), 'ws-'));
  const companyId = uniqueId('co');
  const heartbeatRunId = uniqueId('run');
  const result = await h.client.startRunAndWaitReady({ companyId, heartbeatRunId, workspace: { baseCwd: cwd, cwd } });
  expect(result.executionTarget).toMatchObject({ kind: 'local', cwd });
  const state = await h.client.completeRun(companyId, heartbeatRunId, { status: 'succeeded' });
  expect(state.phase).toBe('released');
  expect(state.releasedLeases[0]?.status).toBe('released');
});
