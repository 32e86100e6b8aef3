// The orchestrator called as Paperclip's heartbeat calls its own (2026.916.1): its inputs as it sends them
// (built with its published types), its results as it reads them, on the real server and a real sshd. The
// type-level side is compat/paperclip (npm run test:paperclip-types); here every call crosses Temporal.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionWorkspace, IssueExecutionWorkspaceSettings } from '@paperclipai/shared';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEnvironmentRunOrchestrator,
  EnvironmentRunError,
  type EnvironmentRunOrchestrator,
} from '../../client/orchestrator/index.js';
import { InvalidInputError } from '../../client/errors.js';
import { ACTIVITY_ACTIONS, type EnvironmentLease } from '../../contracts/index.js';
import { decodedHistory } from '../support/history.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { tempWorkspace, until } from '../support/runs.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let h: Harness;
let sshd: Sshd;
/** envrun's defaults: the provision command runs in the environment; ssh keys stay references. */
let orchestrator: EnvironmentRunOrchestrator;
/** Paperclip's ways: provision over ssh only, with `bash -lc`; ssh targets carry the private key. */
let paperclipWay: EnvironmentRunOrchestrator;
const remoteRoot = mkdtempSync(join(tmpdir(), 'envrun-remote-'));
const KEY_VAR = 'ENVRUN_TEST_ORCHESTRATOR_SSH_KEY';

beforeAll(async () => {
  sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
  process.env[KEY_VAR] = sshd.privateKey;
  h = await createHarness();
  orchestrator = await createEnvironmentRunOrchestrator({ client: h.client, environments: h.store });
  paperclipWay = await createEnvironmentRunOrchestrator({
    client: h.client,
    environments: h.store,
    provision: 'paperclip',
    resolveSshPrivateKey: true,
  });
});
afterAll(async () => {
  await orchestrator?.close();
  await paperclipWay?.close();
  await h?.close();
  await sshd?.stop();
});

/** A persisted execution workspace row of Paperclip's, its runtime commands in `config`. */
function paperclipWorkspace(companyId: string, provisionCommand: string | null): ExecutionWorkspace {
  const now = new Date();
  return {
    id: randomUUID(),
    companyId,
    projectId: randomUUID(),
    projectWorkspaceId: null,
    sourceIssueId: null,
    mode: 'shared_workspace',
    strategyType: 'project_primary',
    name: 'main',
    status: 'active',
    deliveryState: 'unknown',
    cwd: null,
    repoUrl: null,
    baseRef: null,
    branchName: null,
    providerType: 'local_fs',
    providerRef: null,
    derivedFromExecutionWorkspaceId: null,
    lastUsedAt: now,
    openedAt: now,
    closedAt: null,
    cleanupEligibleAt: null,
    cleanupReason: null,
    config: {
      provisionCommand,
      teardownCommand: null,
      cleanupCommand: null,
      workspaceRuntime: null,
      desiredState: null,
    },
    metadata: { createdBy: 'paperclip' },
    createdAt: now,
    updatedAt: now,
  };
}

const settings: IssueExecutionWorkspaceSettings = {
  mode: 'shared_workspace',
  environmentId: null,
  workspaceStrategy: { type: 'project_primary' },
  networkEgress: { allowFqdns: ['registry.npmjs.org'] },
};

/** Paperclip's RealizedExecutionWorkspace, with the fields envrun does not read. */
function realized(cwd: string) {
  return {
    baseCwd: cwd,
    source: 'project_primary' as const,
    projectId: null,
    workspaceId: null,
    repoUrl: null,
    repoRef: null,
    additionalWorkspaces: [],
    strategy: 'project_primary' as const,
    cwd,
    branchName: null,
    worktreePath: null,
    warnings: [],
    created: false,
    branchCreatedByRuntime: false,
  };
}

async function sshEnvironment(companyId: string) {
  return h.admin.createEnvironment({
    companyId,
    name: 'ssh',
    driver: 'ssh',
    config: {
      host: '127.0.0.1',
      port: sshd.port,
      username: sshd.username,
      remoteWorkspacePath: remoteRoot,
      privateKeySecretRef: `env:${KEY_VAR}`,
      knownHosts: sshd.knownHosts,
    },
  });
}

describe("the heartbeat's calls, as Paperclip makes them", () => {
  it("acquire → realize → release on the company's local environment", async () => {
    const companyId = uniqueId('co');
    const heartbeatRunId = randomUUID();
    const agentId = randomUUID();
    const localEnvironmentId = randomUUID(); // Paperclip's own id for the local environment
    const persisted = paperclipWorkspace(companyId, 'echo provisioned > marker');
    const acquired = await orchestrator.acquireForRun({
      companyId,
      selectedEnvironmentId: localEnvironmentId,
      localEnvironmentId,
      adapterType: 'claude_local',
      issueId: null,
      heartbeatRunId,
      agentId,
      persistedExecutionWorkspace: persisted, // the whole row, as the heartbeat has it
      executionWorkspaceSettings: settings,
    });
    expect(acquired.environment).toMatchObject({ companyId, driver: 'local', status: 'active', envVars: {} });
    expect(acquired.environment.createdAt).toBeInstanceOf(Date);
    expect(acquired.lease).toMatchObject({ companyId, heartbeatRunId, status: 'active', executionWorkspaceId: null });
    expect(acquired.lease.acquiredAt).toBeInstanceOf(Date);
    expect(acquired.leaseContext).toMatchObject({
      leaseId: acquired.lease.id,
      executionWorkspaceId: persisted.id,
      executionWorkspaceMode: 'shared_workspace',
    });
    expect(acquired.executionTransport).toBeNull();
    const [acquiredLog] = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseAcquired });
    expect(acquiredLog).toMatchObject({ agentId, runId: heartbeatRunId });

    const cwd = tempWorkspace();
    const result = await orchestrator.realizeForRun({
      environment: acquired.environment,
      lease: acquired.lease,
      adapterType: 'claude_local',
      companyId,
      issueId: null,
      heartbeatRunId,
      executionWorkspace: realized(cwd),
      effectiveExecutionWorkspaceMode: 'shared_workspace',
      persistedExecutionWorkspace: persisted,
      duplexObservabilityRecorder: { record: () => undefined },
    });
    // envrun's way: the provision command (from the workspace's `config`) ran in the environment.
    expect(readFileSync(join(cwd, 'marker'), 'utf8')).toBe('provisioned\n');
    expect(result.workspaceRealization).toMatchObject({ driver: 'local', bootstrap: { exitCode: 0 } });
    expect(result.executionTarget).toMatchObject({ kind: 'local', cwd, workspaceRealization: { mode: 'copy' } });
    expect(result.remoteExecution).toBeNull();
    expect(result.lease.lastUsedAt).toBeInstanceOf(Date);
    // The row handed back as given, its metadata carrying the realization (envrun writes no row of Paperclip's).
    expect(result.persistedExecutionWorkspace).toEqual({
      ...persisted,
      metadata: { createdBy: 'paperclip', workspaceRealization: result.workspaceRealization },
    });

    const { released, errors } = await orchestrator.releaseForRun({ heartbeatRunId, companyId, agentId });
    expect(errors).toEqual([]);
    expect(released).toHaveLength(1);
    expect(released[0]).toMatchObject({
      environment: { id: acquired.environment.id, driver: 'local' },
      lease: { id: acquired.lease.id, status: 'released', cleanupStatus: 'success' },
      leaseContext: { leaseId: acquired.lease.id, heartbeatRunId },
    });
    expect(released[0]!.lease.releasedAt).toBeInstanceOf(Date);
  });

  it('a selected environment, released failed with its reason; the disposition and cancelActiveWork reach the release', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'sbx',
      driver: 'sandbox',
      config: { provider: 'fake', reuseLease: true }, // reused: kept at release unless told otherwise
    });
    const heartbeatRunId = randomUUID();
    const agentId = randomUUID();
    const acquired = await orchestrator.acquireForRun({
      companyId,
      selectedEnvironmentId: env.id,
      localEnvironmentId: randomUUID(),
      adapterType: 'codex_local',
      issueId: randomUUID(),
      heartbeatRunId,
      agentId,
      persistedExecutionWorkspace: null,
      executionWorkspaceSettings: null,
    });
    expect(acquired.environment).toMatchObject({ id: env.id, driver: 'sandbox' });
    expect(acquired.executionTransport).toBeNull();
    const result = await orchestrator.realizeForRun({
      environment: acquired.environment,
      lease: acquired.lease,
      adapterType: 'codex_local',
      companyId,
      issueId: acquired.lease.issueId,
      heartbeatRunId,
      executionWorkspace: realized(tempWorkspace()),
      effectiveExecutionWorkspaceMode: null,
      persistedExecutionWorkspace: null,
    });
    const target = result.executionTarget;
    if (target?.kind !== 'remote' || target.transport !== 'sandbox') throw new Error('expected a sandbox target');
    const sandbox = target.remoteCwd;
    expect(existsSync(sandbox)).toBe(true);
    expect(result.persistedExecutionWorkspace).toBeNull();
    // The target's runner, as Paperclip's sandbox adapters run commands: through the run, in the sandbox.
    const ran = await target.runner.execute({
      command: 'sh',
      args: ['-c', 'echo "$GREETING" > from-runner; cat from-runner; exit 3'],
      env: { GREETING: 'hello' },
    });
    expect(ran).toMatchObject({ exitCode: 3, timedOut: false, stdout: 'hello\n', pid: null });
    expect(readFileSync(join(sandbox, 'from-runner'), 'utf8')).toBe('hello\n');
    // Output streams to onLog as it is written (from the command's journal): the first line arrives while
    // the command still waits for its flag file; 2 MB come back whole (past exec's own tail).
    const logged: Array<[string, string]> = [];
    const streaming = target.runner.execute({
      command: 'sh',
      args: [
        '-c',
        'echo first; while [ ! -e go ]; do sleep 0.1; done; head -c 2000000 /dev/zero | tr "\\0" x; echo oops >&2',
      ],
      onLog: async (stream: 'stdout' | 'stderr', chunk: string) => {
        logged.push([stream, chunk]);
      },
    });
    await until('the first line through onLog', async () => logged.some(([, c]) => c.includes('first')));
    writeFileSync(join(sandbox, 'go'), '');
    const big = await streaming;
    expect(big).toMatchObject({ exitCode: 0, stderr: 'oops\n' });
    expect(big.stdout).toBe('first\n' + 'x'.repeat(2_000_000));
    expect(
      logged
        .filter(([s]) => s === 'stdout')
        .map(([, c]) => c)
        .join(''),
    ).toBe(big.stdout);

    const { released, errors } = await orchestrator.releaseForRun({
      heartbeatRunId,
      companyId,
      agentId,
      status: 'failed',
      failureReason: 'adapter exited with code 1',
      cancelActiveWork: true,
      providerResourceDisposition: 'destroy',
      nativeLifecycleTelemetry: {
        provider: 'fake',
        harness: 'codex',
        lifecycleMode: 'per_turn',
        sandboxResource: 'destroy_after_turn',
      },
    });
    expect(errors).toEqual([]);
    expect(released.map((r) => r.lease)).toMatchObject([
      {
        status: 'failed',
        failureReason: 'adapter exited with code 1',
        metadata: { kept: false, providerResourceDisposition: 'destroy' },
      },
    ]);
    expect(existsSync(sandbox)).toBe(false);
    const [log] = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseReleased });
    expect(log!.details).toMatchObject({ providerResourceDisposition: 'destroy', cancelActiveWork: true });
  });

  it('resolveEnvironment and acquireLease: the local environment made on demand, then a lease on it', async () => {
    const companyId = uniqueId('co');
    const localEnvironmentId = randomUUID();
    const environment = await orchestrator.resolveEnvironment({
      companyId,
      selectedEnvironmentId: '',
      localEnvironmentId,
    });
    expect(environment).toMatchObject({ companyId, driver: 'local', status: 'active', envVars: {} });
    expect(environment.updatedAt).toBeInstanceOf(Date);
    // The same one each time, by Paperclip's local id too.
    expect(
      await orchestrator.resolveEnvironment({
        companyId,
        selectedEnvironmentId: localEnvironmentId,
        localEnvironmentId,
      }),
    ).toEqual(environment);

    const heartbeatRunId = randomUUID();
    const record = await orchestrator.acquireLease({
      companyId,
      environment,
      issueId: null,
      agentId: randomUUID(),
      heartbeatRunId,
      persistedExecutionWorkspace: { id: randomUUID(), mode: 'isolated_workspace' },
      executionWorkspaceSettings: null,
      adapterType: null,
    });
    expect(record.environment.id).toBe(environment.id);
    expect(record.lease).toMatchObject({ environmentId: environment.id, heartbeatRunId, status: 'active' });
    expect(record.leaseContext.executionWorkspaceMode).toBe('isolated_workspace');
    const { released } = await orchestrator.releaseForRun({ companyId, heartbeatRunId, agentId: randomUUID() });
    expect(released.map((r) => r.lease.status)).toEqual(['released']);
  });

  it("resolveEnvironment: unknown, another company's, or archived: Paperclip's codes", async () => {
    const companyId = uniqueId('co');
    const localEnvironmentId = randomUUID();
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'e',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const resolve = (selectedEnvironmentId: string, company = companyId) =>
      orchestrator.resolveEnvironment({ companyId: company, selectedEnvironmentId, localEnvironmentId });
    await expect(resolve(env.id)).resolves.toMatchObject({ id: env.id, driver: 'sandbox' });
    for (const [id, company] of [
      [randomUUID(), companyId],
      [env.id, uniqueId('co')],
      ['not-an-id', companyId],
    ] as const) {
      const err = await resolve(id, company).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EnvironmentRunError);
      expect(err).toMatchObject({ code: 'environment_not_found', environmentId: id });
    }
    await h.admin.archiveEnvironment(companyId, env.id);
    await expect(resolve(env.id)).rejects.toMatchObject({
      code: 'environment_inactive',
      environmentId: env.id,
      driver: 'sandbox',
    });
  });

  it('bad input names the field; a key nobody sends is still refused; nothing starts', async () => {
    const companyId = uniqueId('co');
    const base = {
      companyId,
      selectedEnvironmentId: '',
      localEnvironmentId: randomUUID(),
      adapterType: 'claude_local',
      issueId: null,
      heartbeatRunId: randomUUID(),
      agentId: randomUUID(),
      persistedExecutionWorkspace: null,
      executionWorkspaceSettings: null,
    };
    const refused = async (call: Promise<unknown>, field: RegExp) => {
      const err = await call.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as Error).message).toMatch(field);
    };
    await refused(orchestrator.acquireForRun({ ...base, leaseID: 'x' } as never), /leaseID/);
    await refused(
      orchestrator.acquireForRun({
        ...base,
        persistedExecutionWorkspace: { id: randomUUID(), mode: 'somewhere' } as never,
      }),
      /persistedExecutionWorkspace\.mode/,
    );
    await refused(
      orchestrator.acquireForRun({ ...base, environmentId: randomUUID(), selectedEnvironmentId: randomUUID() }),
      /selectedEnvironmentId/,
    );
    await refused(
      orchestrator.releaseForRun({
        companyId,
        heartbeatRunId: base.heartbeatRunId,
        agentId: base.agentId,
        providerResourceDisposition: 'pause' as never,
      }),
      /providerResourceDisposition/,
    );
    await refused(
      orchestrator.releaseForRun({ companyId, heartbeatRunId: 'r', agentId: 'a', stauts: 'failed' } as never),
      /stauts/,
    );
    expect(await h.client.getRun(companyId, base.heartbeatRunId)).toBeNull();
    // A selected id that is no envrun environment: not found, as Paperclip would say it.
    await expect(orchestrator.acquireForRun({ ...base, selectedEnvironmentId: 'env-7' })).rejects.toMatchObject({
      code: 'environment_not_found',
      message: expect.stringMatching(/selectedEnvironmentId/),
    });
  });

  it('resolveTransport: the ssh connection of an ssh environment, null for others, a bad config named', async () => {
    const companyId = uniqueId('co');
    const env = await sshEnvironment(companyId);
    const input = { companyId, adapterType: 'claude_local', environment: env, leaseMetadata: null };
    expect(await orchestrator.resolveTransport(input)).toEqual({
      host: '127.0.0.1',
      port: sshd.port,
      username: sshd.username,
      remoteWorkspacePath: remoteRoot,
      remoteCwd: remoteRoot,
      strictHostKeyChecking: true,
      knownHosts: sshd.knownHosts,
      privateKeySecretRef: `env:${KEY_VAR}`,
      privateKey: null,
    });
    expect(
      await paperclipWay.resolveTransport({ ...input, leaseMetadata: { remoteCwd: `${remoteRoot}/run` } }),
    ).toMatchObject({ remoteCwd: `${remoteRoot}/run`, privateKey: sshd.privateKey });
    expect(await orchestrator.resolveTransport({ ...input, environment: { ...env, driver: 'local' } })).toBeNull();
    await expect(
      orchestrator.resolveTransport({ ...input, environment: { ...env, config: { ...env.config, host: undefined } } }),
    ).rejects.toMatchObject({ code: 'transport_resolution_failed', message: expect.stringMatching(/config\.host/) });
  });
});

describe('the provision command, the two ways', () => {
  async function sshRun(way: EnvironmentRunOrchestrator, provisionCommand: string) {
    const companyId = uniqueId('co');
    const env = await sshEnvironment(companyId);
    const heartbeatRunId = randomUUID();
    const acquired = await way.acquireForRun({
      companyId,
      selectedEnvironmentId: env.id,
      localEnvironmentId: randomUUID(),
      adapterType: 'claude_local',
      issueId: null,
      heartbeatRunId,
      agentId: randomUUID(),
      persistedExecutionWorkspace: null,
      executionWorkspaceSettings: null,
    });
    const result = await way.realizeForRun({
      environment: acquired.environment,
      lease: acquired.lease,
      adapterType: 'claude_local',
      companyId,
      issueId: null,
      heartbeatRunId,
      executionWorkspace: realized(tempWorkspace()),
      effectiveExecutionWorkspaceMode: null,
      persistedExecutionWorkspace: paperclipWorkspace(companyId, provisionCommand),
    });
    return { acquired, result, companyId, heartbeatRunId };
  }
  const probe = 'echo "$0 ${SHELL:-none}" > shell.txt; (shopt -q login_shell && echo login || echo plain) >> shell.txt';

  it('envrun: over ssh with /bin/sh -c and no login profile; the key stays a reference', async () => {
    const { acquired, result, companyId, heartbeatRunId } = await sshRun(orchestrator, probe);
    expect(acquired.executionTransport).toMatchObject({ host: '127.0.0.1', privateKey: null });
    const remoteCwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    expect(readFileSync(join(remoteCwd, 'shell.txt'), 'utf8')).toBe('/bin/sh none\nplain\n');
    expect(result.remoteExecution).toMatchObject({
      remoteCwd,
      privateKey: null,
      privateKeySecretRef: `env:${KEY_VAR}`,
    });
    await orchestrator.releaseForRun({ companyId, heartbeatRunId, agentId: randomUUID() });
  });

  it("Paperclip's: over ssh with bash -lc (a login shell, SHELL=/bin/bash); the target carries the key", async () => {
    const { acquired, result, companyId, heartbeatRunId } = await sshRun(paperclipWay, probe);
    expect(acquired.executionTransport).toMatchObject({ privateKey: sshd.privateKey });
    const remoteCwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    expect(readFileSync(join(remoteCwd, 'shell.txt'), 'utf8')).toBe('bash /bin/bash\nlogin\n');
    expect(result.executionTarget).toMatchObject({ transport: 'ssh', spec: { privateKey: sshd.privateKey } });
    expect(result.remoteExecution).toEqual((result.executionTarget as { spec: unknown }).spec);
    // The key went to the caller only: not into the lease or the run's history.
    const stored: EnvironmentLease = (await h.store.getLease(companyId, result.lease.id))!;
    const keyLine = sshd.privateKey.trim().split('\n')[1]!;
    expect(JSON.stringify(stored)).not.toContain(keyLine);
    const history = await h.client.handle(companyId, heartbeatRunId).fetchHistory();
    expect(decodedHistory(history)).toContain(heartbeatRunId); // payloads decoded: the search can find things
    expect(decodedHistory(history)).not.toContain(keyLine);
    await paperclipWay.releaseForRun({ companyId, heartbeatRunId, agentId: randomUUID() });
  });

  it("Paperclip's: a local environment skips it (the control plane provisioned its worktree)", async () => {
    const companyId = uniqueId('co');
    const heartbeatRunId = randomUUID();
    const localEnvironmentId = randomUUID();
    const acquired = await paperclipWay.acquireForRun({
      companyId,
      selectedEnvironmentId: localEnvironmentId,
      localEnvironmentId,
      adapterType: 'claude_local',
      issueId: null,
      heartbeatRunId,
      agentId: randomUUID(),
      persistedExecutionWorkspace: null,
      executionWorkspaceSettings: null,
    });
    const cwd = tempWorkspace();
    const result = await paperclipWay.realizeForRun({
      environment: acquired.environment,
      lease: acquired.lease,
      adapterType: 'claude_local',
      companyId,
      issueId: null,
      heartbeatRunId,
      executionWorkspace: realized(cwd),
      effectiveExecutionWorkspaceMode: null,
      persistedExecutionWorkspace: paperclipWorkspace(companyId, 'echo provisioned > marker'),
    });
    expect(existsSync(join(cwd, 'marker'))).toBe(false);
    expect(result.workspaceRealization).toMatchObject({ bootstrap: { command: null, exitCode: null } });
    await paperclipWay.releaseForRun({ companyId, heartbeatRunId, agentId: randomUUID() });
  });
});
