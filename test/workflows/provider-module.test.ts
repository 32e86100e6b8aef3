// A sandbox provider added as a module from outside envrun's source tree, with no core change.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadProviders } from '../../drivers/providers/load.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest } from '../support/runs.js';

const outside = mkdtempSync(join(tmpdir(), 'my-providers-'));
for (const name of ['dirbox.mjs', 'liar.mjs']) {
  copyFileSync(fileURLToPath(new URL(`../fixtures/providers/${name}`, import.meta.url)), join(outside, name));
}

let h: Harness;
beforeAll(async () => {
  h = await createHarness({ providerModules: [join(outside, 'dirbox.mjs'), join(outside, 'liar.mjs')] });
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
  expect(await h.admin.probeEnvironment(companyId, env.id)).toEqual({
    ok: true,
    diagnostics: [`dirbox root ${join(h.dataDir, 'dirbox')}`],
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
