// Companies sharing one worker host: a run's paths stay inside the deployment's workspace roots (and out of
// the worker's data folder), a company uses only the secret references granted to it, and a driver or
// provider the deployment does not enable is refused, both when an environment is written and when the
// worker resolves it.
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../client/errors.js';
import { loadTenancy } from '../../config/tenancy.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runRequest } from '../support/runs.js';

const root = mkdtempSync(join(tmpdir(), 'envrun-roots-'));
const allowed = join(root, 'workspaces');
const outside = mkdtempSync(join(tmpdir(), 'envrun-outside-'));
const dataDir = join(allowed, '.envrun');
const A = uniqueId('co-a');
const B = uniqueId('co-b');
const sshConfig = (ref: string) => ({
  host: '127.0.0.1',
  port: 22,
  username: 'agent',
  remoteWorkspacePath: '/srv/ws',
  privateKeySecretRef: ref,
  knownHosts: '127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
});

let h: Harness;
let sandboxOnly: Harness;
beforeAll(async () => {
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'pg-password'), 'the store credentials\n');
  process.env.ENVRUN_TEST_KEY_OF_A = 'not a key, but it exists';
  const env = {
    ENVRUN_WORKSPACE_ROOTS: allowed,
    ENVRUN_SECRET_GRANTS: JSON.stringify({ [A]: ['env:ENVRUN_TEST_KEY_OF_A'] }),
  };
  h = await createHarness({ tenancy: loadTenancy(env, dataDir) });
  sandboxOnly = await createHarness({
    tenancy: loadTenancy({ ...env, ENVRUN_DRIVERS: 'ssh,sandbox', ENVRUN_PROVIDERS: 'bubblewrap' }),
  });
});
afterAll(async () => {
  await h?.close();
  await sandboxOnly?.close();
});

describe('workspace roots', () => {
  it('refuses a cwd outside the roots, leasing nothing', async () => {
    const companyId = uniqueId('co');
    const err = await expectRunError(
      h.client.startRunAndWaitReady(runRequest({ companyId, cwd: outside })),
      'invalid_request',
    );
    expect(err.message).toMatch(/request\.workspace\.(baseCwd|cwd): .* is outside the workspace roots/);
    expect(await h.store.listLeases(companyId)).toEqual([]);
  });

  it('refuses a cwd that reaches outside through a symlink inside a root', async () => {
    const link = join(allowed, uniqueId('link'));
    symlinkSync(outside, link);
    const request = runRequest({ cwd: link });
    request.workspace = { ...request.workspace!, baseCwd: mkdtempSync(join(allowed, 'ws-')) };
    const err = await expectRunError(h.client.startRunAndWaitReady(request), 'invalid_request');
    expect(err.message).toContain('request.workspace.cwd');
  });

  it("refuses the worker's data folder although it lies inside a root", async () => {
    const err = await expectRunError(h.client.startRunAndWaitReady(runRequest({ cwd: dataDir })), 'invalid_request');
    expect(err.message).toContain('outside the workspace roots');
  });

  it('refuses a worktree path outside the roots', async () => {
    const cwd = mkdtempSync(join(allowed, 'ws-'));
    const request = runRequest({ cwd });
    request.workspace = { ...request.workspace!, worktreePath: join(outside, 'wt') };
    const err = await expectRunError(h.client.startRunAndWaitReady(request), 'invalid_request');
    expect(err.message).toContain('request.workspace.worktreePath');
  });

  it('accepts a cwd inside a root', async () => {
    const companyId = uniqueId('co');
    const cwd = mkdtempSync(join(allowed, 'ws-'));
    const ready = await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: 'inside', cwd }));
    expect(ready.executionTarget).toMatchObject({ kind: 'local' });
    await h.client.completeRun(companyId, 'inside', { status: 'succeeded' });
  });
});

describe('secret grants', () => {
  it('company B cannot use a reference granted only to A, and is not told whether it exists', async () => {
    const create = (ref: string) =>
      h.admin.createEnvironment({ companyId: B, name: 'ssh', driver: 'ssh', config: sshConfig(ref) });
    const granted = await create('env:ENVRUN_TEST_KEY_OF_A').catch((e: unknown) => e);
    const missing = await create('env:ENVRUN_NO_SUCH_VARIABLE').catch((e: unknown) => e);
    expect(granted).toBeInstanceOf(InvalidInputError);
    expect((granted as Error).message).toContain('config.privateKeySecretRef');
    expect((granted as Error).message).toContain('not granted');
    // The same words for a variable that exists and one that does not.
    expect((missing as Error).message.replace('ENVRUN_NO_SUCH_VARIABLE', 'X')).toBe(
      (granted as Error).message.replace('ENVRUN_TEST_KEY_OF_A', 'X'),
    );
    expect(await h.store.listEnvironments(B)).toEqual([]);
  });

  it('refuses an ungranted file: reference at create and at update', async () => {
    await expect(
      h.admin.createEnvironment({ companyId: A, name: 'ssh', driver: 'ssh', config: sshConfig('file:/etc/shadow') }),
    ).rejects.toThrow(/config\.privateKeySecretRef: file:\/etc\/shadow is not granted/);
    const env = await h.admin.createEnvironment({
      companyId: A,
      name: 'ssh-ok',
      driver: 'ssh',
      config: sshConfig('env:ENVRUN_TEST_KEY_OF_A'),
    });
    await expect(
      h.admin.updateEnvironment(A, env.id, { config: sshConfig('file:/etc/ssh/ssh_host_ed25519_key') }),
    ).rejects.toBeInstanceOf(InvalidInputError);
    expect((await h.admin.getEnvironment(A, env.id)).config).toMatchObject({
      privateKeySecretRef: 'env:ENVRUN_TEST_KEY_OF_A',
    });
  });

  it('refuses at resolve a reference written around the admin API', async () => {
    const env = await h.store.createEnvironment({
      companyId: B,
      name: 'planted',
      driver: 'ssh',
      description: null,
      config: sshConfig('env:ENVRUN_TEST_KEY_OF_A'),
    });
    const err = await expectRunError(
      h.client.startRunAndWaitReady(
        runRequest({ companyId: B, environmentId: env.id, cwd: mkdtempSync(join(allowed, 'ws-')) }),
      ),
      'unsupported_environment',
    );
    expect(err.message).toContain('not granted');
    expect(await h.store.listLeases(B)).toEqual([]);
  });
});

describe('enabled drivers and providers', () => {
  it('refuses a disabled driver at create and a disabled provider at create and at resolve', async () => {
    const companyId = uniqueId('co');
    await expect(
      sandboxOnly.admin.createEnvironment({
        companyId,
        name: 'p',
        driver: 'plugin',
        config: { pluginKey: 'k', driverKey: 'd' },
      }),
    ).rejects.toThrow(/driver: plugin is not enabled/);
    await expect(
      sandboxOnly.admin.createEnvironment({ companyId, name: 'f', driver: 'sandbox', config: { provider: 'fake' } }),
    ).rejects.toThrow(/config\.provider: fake is not enabled/);
    // Written before the deployment disabled it (straight into the store), run now.
    const fake = await sandboxOnly.store.createEnvironment({
      companyId,
      name: 'f',
      driver: 'sandbox',
      description: null,
      config: { provider: 'fake' },
    });
    const request = runRequest({ companyId, environmentId: fake.id, cwd: mkdtempSync(join(allowed, 'ws-')) });
    const err = await expectRunError(sandboxOnly.client.startRunAndWaitReady(request), 'unsupported_environment');
    expect(err.message).toContain('fake is not enabled');
    // The default local environment is refused by a deployment without the local driver.
    await expectRunError(
      sandboxOnly.client.startRunAndWaitReady(
        runRequest({ companyId: uniqueId('co'), cwd: mkdtempSync(join(allowed, 'ws-')) }),
      ),
      'unsupported_environment',
    );
  });
});
