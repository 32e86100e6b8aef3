// The bubblewrap provider: real namespaces from Debian's `bwrap`.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBubblewrapProvider } from '../../drivers/providers/bubblewrap/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { callContext } from '../support/sandbox.js';
import { expectRunError, runEnd, runRequest, tempWorkspace } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

describe('bubblewrap provider', () => {
  it('realizes by archive upload, runs with only the explicit env and no network, syncs back at release', async () => {
    process.env.ENVRUN_WORKER_SECRET = 'worker-secret-value';
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const cwd = tempWorkspace();
    writeFileSync(join(cwd, 'input.txt'), 'from the host');
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'cat input.txt > copied.txt && echo built > out.txt' },
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.executionTarget).toMatchObject({
      kind: 'remote',
      transport: 'sandbox',
      providerKey: 'bubblewrap',
      remoteCwd: '/workspace',
    });
    expect(result.workspaceRealization).toMatchObject({ sync: { strategy: 'sandbox_archive_upload_download' } });

    const exec = (command: string, args: string[] = [], env: Record<string, string> = {}) =>
      h.admin.exec(companyId, req.heartbeatRunId, { command, args, env });
    const envOut = await exec('env', [], { ONLY: 'me' });
    // bwrap itself adds PWD for --chdir; nothing comes from the worker's environment.
    expect(envOut.stdout.trim().split('\n').sort()).toEqual([
      'HOME=/workspace',
      'ONLY=me',
      'PATH=/usr/local/bin:/usr/bin:/bin',
      'PWD=/workspace',
    ]);
    expect(envOut.stdout).not.toContain('worker-secret-value');
    // New namespaces: pid 1 is bwrap's, no network but loopback, the host's data folder is absent.
    const net = await exec('cat', ['/proc/net/dev']);
    expect(
      net.stdout
        .trim()
        .split('\n')
        .slice(2)
        .map((l) => l.trim().split(':')[0]),
    ).toEqual(['lo']);
    expect((await exec('test', ['-e', h.dataDir])).exitCode).toBe(1);
    expect((await exec('sh', ['-c', 'echo x > /usr/evil'])).exitCode).not.toBe(0); // the system is read-only
    expect((await exec('cat', ['copied.txt'])).stdout).toBe('from the host');
    const timed = await h.admin.exec(companyId, req.heartbeatRunId, { command: 'sleep', args: ['20'], timeoutMs: 300 });
    expect(timed).toMatchObject({ timedOut: true, exitCode: null });

    const sandboxes = join(h.dataDir, 'sandboxes', 'bubblewrap');
    expect(readdirSync(sandboxes)).toHaveLength(1);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(cwd, 'out.txt'), 'utf8')).toBe('built\n'); // synced back
    expect(readdirSync(sandboxes)).toHaveLength(0);
  });

  it("discardChanges keeps the sandbox's changes out of the local workspace", async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap', discardChanges: true },
    });
    const cwd = tempWorkspace();
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'echo scratch > scratch.txt' },
    });
    await h.client.startRunAndWaitReady(req);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(existsSync(join(cwd, 'scratch.txt'))).toBe(false);
  });

  it('a failing provision inside the sandbox fails the run and removes the sandbox', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const req = runRequest({
      companyId,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'echo "cannot reach registry" >&2; exit 4' },
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    expect(err).toMatchObject({
      provider: 'bubblewrap',
      message: 'provision command exited with code 4: cannot reach registry',
    });
    await runEnd(h, companyId, req.heartbeatRunId);
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'failed', cleanupStatus: 'success' });
    expect(existsSync((lease!.metadata!.provider as { root: string }).root)).toBe(false);
  });

  it("network: true (the old boolean) means outbound: a namespace of its own with a user-mode stack, not the host's", async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'net',
      driver: 'sandbox',
      config: { provider: 'bubblewrap', network: true },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    await h.client.startRunAndWaitReady(req);
    const inside = await h.admin.exec(companyId, req.heartbeatRunId, { command: 'cat', args: ['/proc/net/dev'] });
    expect(
      inside.stdout
        .trim()
        .split('\n')
        .slice(2)
        .map((l) => l.trim().split(':')[0])
        .sort(),
    ).toEqual(['lo', 'tap0']);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('without bwrap, probe says so plainly and acquire fails without retrying', async () => {
    const provider = createBubblewrapProvider({ rootDir: join(h.dataDir, 'nobwrap'), bwrapPath: null });
    const { config } = await provider.validateConfig({ provider: 'bubblewrap' });
    const where = { companyId: 'co', environmentId: 'e' };
    expect(await provider.probe(config, where)).toEqual({
      ok: false,
      diagnostics: [{ severity: 'error', message: 'bwrap is not installed (Debian: apt-get install bubblewrap)' }],
    });
    await expect(
      provider.acquireLease(config, {
        ...callContext('r'),
        idempotencyKey: 'k',
        reuseKey: null,
      }),
    ).rejects.toMatchObject({
      name: 'NonRetryableError',
      message: 'bwrap is not installed (Debian: apt-get install bubblewrap)',
    });
    const broken = createBubblewrapProvider({ rootDir: join(h.dataDir, 'nobwrap'), bwrapPath: '/bin/false' });
    expect((await broken.probe(config, where)).diagnostics[0]).toMatchObject({
      severity: 'error',
      message: expect.stringMatching(/^bwrap cannot create namespaces here: /),
    });
    const real = await h.admin
      .createEnvironment({
        companyId: uniqueId('co'),
        name: 'b',
        driver: 'sandbox',
        config: { provider: 'bubblewrap' },
      })
      .then((env) => h.admin.probeEnvironment(env.companyId, env.id));
    expect(real.ok).toBe(true);
  });
});
