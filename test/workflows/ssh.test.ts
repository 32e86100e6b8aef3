// The ssh driver against a real OpenSSH server on 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../lib/net.js';
import { runWorkflowId } from '../../contracts/index.js';
import { decodedHistory } from '../support/history.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, scheduledActivities, tempWorkspace } from '../support/runs.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let h: Harness;
let sshd: Sshd;
const remoteRoot = mkdtempSync(join(tmpdir(), 'envrun-remote-'));
const KEY_VAR = 'ENVRUN_TEST_SSH_KEY';

beforeAll(async () => {
  sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
  process.env[KEY_VAR] = sshd.privateKey; // the worker resolves env:ENVRUN_TEST_SSH_KEY at run time
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
  await sshd?.stop();
});

const sshConfig = (over: Record<string, unknown> = {}) => ({
  host: '127.0.0.1',
  port: sshd.port,
  username: sshd.username,
  remoteWorkspacePath: remoteRoot,
  privateKeySecretRef: `env:${KEY_VAR}`,
  knownHosts: sshd.knownHosts,
  ...over,
});

describe('ssh driver', () => {
  it('acquires, uploads, provisions remotely, exposes the SSH target, syncs back and removes the run folder', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
    const cwd = tempWorkspace();
    writeFileSync(join(cwd, "it's a file.txt"), 'local');
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'echo provisioned-remotely > remote.txt; env > env.txt' },
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.lease.providerLeaseId).toMatch(
      new RegExp(
        `^ssh://${sshd.username}@127\\.0\\.0\\.1:${sshd.port}${remoteRoot}/${req.heartbeatRunId}-[0-9a-f]{12}$`,
      ),
    );
    expect(result.executionTarget).toMatchObject({
      kind: 'remote',
      transport: 'ssh',
      spec: { host: '127.0.0.1', port: sshd.port, privateKeySecretRef: `env:${KEY_VAR}` },
    });
    expect(result.remoteExecution).toEqual((result.executionTarget as { spec: unknown }).spec);
    // Realizing and resolving an SSH target go over the network: an ordinary activity on the shared queue.
    const steps = await h.client.temporal.workflow
      .getHandle(runWorkflowId(companyId, req.heartbeatRunId))
      .fetchHistory();
    const prepare = (steps.events ?? []).find(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'prepareWorkspace',
    );
    expect(prepare?.activityTaskScheduledEventAttributes?.taskQueue?.name).toBe(h.taskQueue);
    expect(result.workspaceRealization).toMatchObject({
      transport: 'ssh',
      sync: { strategy: 'ssh_archive_upload_download' },
    });
    expect((result.workspaceRealization as { summary: string }).summary).toMatch(
      /^SSH workspace realized at .+@127\.0\.0\.1:\d+:\/.+\.$/,
    );
    const remoteCwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    expect(readFileSync(join(remoteCwd, "it's a file.txt"), 'utf8')).toBe('local');
    // Provision saw only the explicit environment: no worker variable, and never the key.
    const envDump = readFileSync(join(remoteCwd, 'env.txt'), 'utf8');
    expect(envDump).not.toContain(KEY_VAR);
    expect(envDump).not.toContain('PRIVATE KEY');

    const exec = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'sh',
      args: ['-c', 'cat remote.txt; echo "$1"', 'x', '$(id) ; rm -rf /'],
      env: { A: 'b' },
    });
    expect(exec).toMatchObject({ exitCode: 0, stdout: 'provisioned-remotely\n$(id) ; rm -rf /\n' });

    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(cwd, 'remote.txt'), 'utf8')).toBe('provisioned-remotely\n'); // synced back
    expect(existsSync(remoteCwd)).toBe(false);

    // The key is in no lease metadata, activity log entry or workflow history.
    const leases = JSON.stringify(await h.store.listLeases(companyId));
    const log = JSON.stringify(await h.store.listActivity(companyId));
    const history = decodedHistory(
      await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, req.heartbeatRunId)).fetchHistory(),
    );
    const keyBody = sshd.privateKey.split('\n')[1]!;
    for (const text of [leases, log, history]) expect(text).not.toContain(keyBody);
  });

  it('a reused run folder is kept at release and removed when its environment is archived', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh-reused',
      driver: 'ssh',
      config: sshConfig({ leasePolicy: 'reuse_by_environment' }),
    });
    const req = runRequest({ companyId, cwd: tempWorkspace(), environmentId: env.id });
    const result = await h.client.startRunAndWaitReady(req);
    const remoteCwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(existsSync(remoteCwd)).toBe(true); // kept for the next run
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease!.metadata).toMatchObject({ kept: true });
    const archived = await h.admin.archiveEnvironment(companyId, env.id);
    expect(archived.keptResources).toMatchObject({ destroyed: 1, failed: 0 });
    expect(existsSync(remoteCwd)).toBe(false);
  });

  it('refuses an unknown host key with strict checking (a clear, non-retried error)', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: sshConfig({
        knownHosts: '[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
      }),
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'lease_acquire_failed');
    expect(err.message).toContain(`host key of 127.0.0.1:${sshd.port} is not in knownHosts`);
    await runEnd(h, companyId, req.heartbeatRunId);
    expect(await h.admin.probeEnvironment(companyId, env.id)).toMatchObject({ ok: false });
  });

  it('a file: secret reference works too', async () => {
    const keyFile = join(mkdtempSync(join(tmpdir(), 'key-')), 'id');
    writeFileSync(keyFile, sshd.privateKey, { mode: 0o600 });
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh-file',
      driver: 'ssh',
      config: sshConfig({ privateKeySecretRef: `file:${keyFile}` }),
    });
    const req = runRequest({ companyId, environmentId: env.id });
    await h.client.startRunAndWaitReady(req);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('a missing key secret fails plainly; probe reports a reachable host', async () => {
    const companyId = uniqueId('co');
    const ok = await h.admin.createEnvironment({ companyId, name: 'ssh-ok', driver: 'ssh', config: sshConfig() });
    const probe = await h.admin.probeEnvironment(companyId, ok.id);
    expect(probe.ok).toBe(true);
    expect(probe.diagnostics[0]).toEqual({
      severity: 'info',
      message: `connected to ${sshd.username}@127.0.0.1:${sshd.port}`,
    });
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: sshConfig({ privateKeySecretRef: 'env:ENVRUN_NO_SUCH_KEY' }),
    });
    const err = await expectRunError(
      h.client.startRunAndWaitReady(runRequest({ companyId, environmentId: env.id })),
      'lease_acquire_failed',
    );
    expect(err.message).toBe('privateKeySecretRef env:ENVRUN_NO_SUCH_KEY: the variable is not set on this worker');
  });

  it('a failing remote provision reports exit code and first stderr line; the run folder is removed', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
    const req = runRequest({
      companyId,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'echo "make: *** no rule" >&2; exit 2' },
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    expect(err).toMatchObject({ driver: 'ssh', message: 'provision command exited with code 2: make: *** no rule' });
    await runEnd(h, companyId, req.heartbeatRunId);
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'failed', cleanupStatus: 'success' });
    expect(existsSync(lease!.providerLeaseId!.replace(/^ssh:\/\/[^/]+/, ''))).toBe(false);
  });
});

describe('ssh driver, more', () => {
  it('git-aware sync: ships .git and what git would, not ignored files; exports changes back the same way', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
    const cwd = tempWorkspace();
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', cwd, ...args], {
        env: {
          PATH: process.env.PATH!,
          HOME: cwd,
          GIT_AUTHOR_NAME: 't',
          GIT_AUTHOR_EMAIL: 't@t',
          GIT_COMMITTER_NAME: 't',
          GIT_COMMITTER_EMAIL: 't@t',
        },
      });
    git('init', '-q', '-b', 'main');
    writeFileSync(join(cwd, '.gitignore'), 'node_modules/\n*.log\n');
    writeFileSync(join(cwd, 'app.js'), 'console.log(1)');
    git('add', '.');
    git('commit', '-qm', 'init');
    writeFileSync(join(cwd, 'draft.md'), 'untracked but not ignored');
    mkdirSync(join(cwd, 'node_modules'));
    writeFileSync(join(cwd, 'node_modules', 'huge.bin'), 'x'.repeat(1000));
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: {
        provisionCommand:
          'test ! -e node_modules && test -f draft.md && git log --oneline | wc -l > commits.txt && echo noise > build.log',
      },
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.workspaceRealization).toMatchObject({ sync: { strategy: 'ssh_git_import_export' } });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(cwd, 'commits.txt'), 'utf8').trim()).toBe('1');
    expect(existsSync(join(cwd, 'build.log'))).toBe(false); // ignored: not exported
  });

  it('a connection that fails at first is retried with backoff and the run becomes ready', async () => {
    const companyId = uniqueId('co');
    const port = await freePort();
    const late = mkdtempSync(join(tmpdir(), 'envrun-sshd-late-'));
    // The host key must be known before the server exists: make it now, start the server later.
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(late, 'host_key')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(late, 'user_key')]);
    const hostPub = readFileSync(join(late, 'host_key.pub'), 'utf8').trim().split(/\s+/);
    process.env.ENVRUN_TEST_LATE_KEY = readFileSync(join(late, 'user_key'), 'utf8');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'late',
      driver: 'ssh',
      config: sshConfig({
        port,
        privateKeySecretRef: 'env:ENVRUN_TEST_LATE_KEY',
        knownHosts: `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}`,
      }),
    });
    const req = runRequest({ companyId, environmentId: env.id });
    const ready = h.client.startRunAndWaitReady(req);
    await new Promise((r) => setTimeout(r, 1200)); // attempts 1 and 2 find nothing listening
    const server = await startSshd(late, port);
    try {
      const result = await ready;
      expect(result.executionTarget).toMatchObject({ transport: 'ssh' });
      const history = await h.client.temporal.workflow
        .getHandle(runWorkflowId(companyId, req.heartbeatRunId))
        .fetchHistory();
      const acquire = history.events!.find(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'acquireLease',
      );
      const started = history.events!.find(
        (e) =>
          e.activityTaskStartedEventAttributes &&
          e.activityTaskStartedEventAttributes.scheduledEventId?.toString() === acquire!.eventId!.toString(),
      );
      expect(started!.activityTaskStartedEventAttributes!.attempt).toBeGreaterThanOrEqual(2);
      expect(started!.activityTaskStartedEventAttributes!.lastFailure?.message).toMatch(
        /ssh connection to .* failed: .*ECONNREFUSED/,
      );
      await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    } finally {
      await server.stop();
    }
  });
});
