// A sandbox provider added as a module from outside envrun's source tree, with no core change: a version 1
// module (no contractVersion: dirbox, liar) through the adapter, and a version 2 one (recorder).
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadProviders } from '../../drivers/providers/load.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, tempWorkspace } from '../support/runs.js';

const outside = mkdtempSync(join(tmpdir(), 'my-providers-'));
for (const name of ['dirbox.mjs', 'liar.mjs', 'recorder.mjs']) {
  copyFileSync(fileURLToPath(new URL(`../fixtures/providers/${name}`, import.meta.url)), join(outside, name));
}

let h: Harness;
beforeAll(async () => {
  h = await createHarness({
    providerModules: [join(outside, 'dirbox.mjs'), join(outside, 'liar.mjs'), join(outside, 'recorder.mjs')],
  });
});
afterAll(async () => {
  await h?.close();
});

it('runs a run through a module-loaded provider, realize to release', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'dirbox',
    driver: 'sandbox',
    config: { provider: 'dirbox', label: 'x' },
  });
  const req = runRequest({
    companyId,
    environmentId: env.id,
    runtimeOverlay: { provisionCommand: 'echo made-by-dirbox > out.txt' },
  });
  writeFileSync(join((req.workspace as { cwd: string }).cwd, 'src.txt'), 'source');
  const result = await h.client.startRunAndWaitReady(req);
  expect(result.executionTarget).toMatchObject({ kind: 'remote', transport: 'sandbox', providerKey: 'dirbox' });
  expect(result.workspaceRealization).toMatchObject({
    provider: 'dirbox',
    sync: { strategy: 'sandbox_archive_upload_download' },
  });
  const cwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
  expect(readFileSync(join(cwd, 'src.txt'), 'utf8')).toBe('source');
  expect(readFileSync(join(cwd, 'out.txt'), 'utf8')).toBe('made-by-dirbox\n');
  // A version 1 module's lines come with a severity: information, as its probe passed.
  expect(await h.admin.probeEnvironment(companyId, env.id)).toEqual({
    ok: true,
    diagnostics: [{ severity: 'info', message: `dirbox root ${join(h.dataDir, 'dirbox')}` }],
  });
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  expect(existsSync(cwd)).toBe(false);
});

it('a provider config the module rejects is refused when the environment is created', async () => {
  await expect(
    h.admin.createEnvironment({
      companyId: uniqueId('co'),
      name: 'd',
      driver: 'sandbox',
      config: { provider: 'dirbox', label: 5 },
    }),
  ).rejects.toThrow('config.label: must be a string');
});

it('a reply off the contract fails the step with a message naming the provider', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'liar',
    driver: 'sandbox',
    config: { provider: 'liar' },
  });
  const req = runRequest({ companyId, environmentId: env.id });
  const err = await expectRunError(h.client.startRunAndWaitReady(req), 'lease_acquire_failed');
  expect(err.message).toMatch(
    /^sandbox provider "liar" returned an invalid reply to acquireLease: reply\.providerLeaseId/,
  );
  expect(err.provider).toBe('liar');
  await runEnd(h, companyId, req.heartbeatRunId);
  await expect(h.admin.probeEnvironment(companyId, env.id)).rejects.toThrow(
    /"liar" returned an invalid reply to probe/,
  );
});

it('a duplicate provider key is refused at start', async () => {
  await expect(
    loadProviders({ dataDir: h.dataDir, providerModules: [join(outside, 'dirbox.mjs'), join(outside, 'dirbox.mjs')] }),
  ).rejects.toThrow('duplicate sandbox provider key "dirbox"');
  await expect(loadProviders({ dataDir: h.dataDir, providerModules: [join(outside, 'missing.mjs')] })).rejects.toThrow(
    /provider module .*missing\.mjs could not be loaded/,
  );
});

it('a version 2 module: its normalized config is stored, every call carries the run and the lease, the receipt is recorded', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'recorder',
    driver: 'sandbox',
    config: { provider: 'recorder', label: '  padded  ', leasePolicy: 'ephemeral' },
  });
  // The provider's normalized config, with envrun's own keys as given.
  expect(env.config).toEqual({
    provider: 'recorder',
    label: 'padded',
    realizeAt: 'sandbox',
    leasePolicy: 'ephemeral',
    reuseLease: false,
  });
  await expect(
    h.admin.updateEnvironment(companyId, env.id, { config: { provider: 'recorder', realizeAt: 'moon' } }),
  ).rejects.toThrow('config.realizeAt: must be "sandbox", "local", "parent" or "inside"');
  expect(await h.admin.probeEnvironment(companyId, env.id)).toEqual({
    ok: true,
    summary: 'recorder ready',
    diagnostics: [
      { severity: 'info', message: `root ${join(h.dataDir, 'recorder')}` },
      { severity: 'warning', message: 'every call is recorded', code: 'records_calls' },
    ],
  });
  const ws = await h.admin.createExecutionWorkspace({ companyId, name: 'ws', cwd: tempWorkspace() });
  const req = runRequest({
    companyId,
    environmentId: env.id,
    executionWorkspaceId: ws.id,
    issueId: 'issue-19',
    agentId: 'agent-19',
    adapterType: 'codex_local',
    runtimeOverlay: { provisionCommand: 'echo provisioned > p.txt' },
  });
  const result = await h.client.startRunAndWaitReady(req);
  await h.client.exec(companyId, req.heartbeatRunId, { command: 'true', args: [] });
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  await runEnd(h, companyId, req.heartbeatRunId);

  const calls = readFileSync(join(h.dataDir, 'recorder', 'calls.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown> & { op: string; lease?: { metadata: { token?: string } } })
    .filter((c) => c.heartbeatRunId === req.heartbeatRunId);
  expect(calls.map((c) => c.op)).toEqual([
    'acquireLease',
    'realizeWorkspace',
    'execute',
    'resolveTarget',
    'execute',
    'releaseLease',
  ]);
  for (const c of calls)
    expect(c, c.op).toMatchObject({
      companyId,
      environmentId: env.id,
      agentId: 'agent-19',
      adapterType: 'codex_local',
      executionWorkspaceId: ws.id,
      issueId: 'issue-19',
      requestedExpiresAt: expect.any(String),
    });
  const lease = (await h.store.getLease(companyId, result.lease.id))!;
  const token = (lease.metadata!.provider as { token: string }).token;
  for (const c of calls.slice(1))
    expect(c.lease, c.op).toMatchObject({ providerLeaseId: lease.providerLeaseId, metadata: { token } });
  expect(lease.metadata!.termination).toEqual({ providerLeaseId: lease.providerLeaseId, state: 'destroyed' });
});
