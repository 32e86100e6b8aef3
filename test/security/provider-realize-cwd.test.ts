// ATTACK: a sandbox provider answered realize with the control plane's own workspace folder (a provider that
// lost its sandbox and fell back to the path it was given, as happened when a worker restarted between
// acquire and realize): the provision command ran there, on the control plane's files, not in a sandbox,
// and the run became ready. A realized cwd that is the local workspace folder or inside it, or a reported host folder above it,
// is now refused with workspace_realization_failed before anything runs there.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest } from '../support/runs.js';

const outside = mkdtempSync(join(tmpdir(), 'envrun-recorder-'));
const MODULE = join(outside, 'recorder.mjs');
copyFileSync(fileURLToPath(new URL('../fixtures/providers/recorder.mjs', import.meta.url)), MODULE);

let h: Harness;
beforeAll(async () => {
  h = await createHarness({ providerModules: [MODULE] });
});
afterAll(async () => {
  await h?.close();
});

/** What the provider was asked for the run, in order. */
function calls(heartbeatRunId: string): { op: string; command?: string; cwd?: string | null }[] {
  const file = join(h.dataDir, 'recorder', 'calls.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { op: string; heartbeatRunId?: string })
    .filter((c) => c.heartbeatRunId === heartbeatRunId);
}

it("a provider that realizes at the control plane's own folder is refused before the provision command runs", async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'lost-sandbox',
    driver: 'sandbox',
    config: { provider: 'recorder', realizeAt: 'local' },
  });
  const req = runRequest({
    companyId,
    environmentId: env.id,
    runtimeOverlay: { provisionCommand: 'echo provisioned > provisioned-here.txt' },
  });
  const local = (req.workspace as { cwd: string }).cwd;
  writeFileSync(join(local, 'control-plane.txt'), 'the control plane keeps this');
  const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
  expect(err.message).toContain(
    `realized the workspace at ${local}, which is the control plane's own workspace folder`,
  );
  expect(existsSync(join(local, 'provisioned-here.txt'))).toBe(false);
  expect(readFileSync(join(local, 'control-plane.txt'), 'utf8')).toBe('the control plane keeps this');
  // Nothing was run at all: realize was answered, then no execute; the lease was released.
  await runEnd(h, companyId, req.heartbeatRunId);
  const ops = calls(req.heartbeatRunId).map((c) => c.op);
  expect(ops).toContain('realizeWorkspace');
  expect(ops).not.toContain('execute');
  expect(ops).toContain('releaseLease');
});

it.each(['parent', 'inside'])(
  'a realized folder %s the control plane folder is refused too (parent: the host folder the provider reports)',
  async (realizeAt) => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: `lost-sandbox-${realizeAt}`,
      driver: 'sandbox',
      config: { provider: 'recorder', realizeAt },
    });
    const parent = mkdtempSync(join(tmpdir(), 'envrun-parent-'));
    const cwd = join(parent, 'project');
    mkdirSync(join(cwd, 'sub'), { recursive: true });
    const req = runRequest({
      companyId,
      environmentId: env.id,
      cwd,
      runtimeOverlay: { provisionCommand: 'echo provisioned > provisioned-here.txt' },
    });
    await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    for (const dir of [parent, cwd, join(cwd, 'sub')])
      expect(existsSync(join(dir, 'provisioned-here.txt'))).toBe(false);
    await runEnd(h, companyId, req.heartbeatRunId);
    expect(calls(req.heartbeatRunId).map((c) => c.op)).not.toContain('execute');
  },
);
