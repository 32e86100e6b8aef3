// Paperclip's heartbeat calls through envrun's orchestrator, on an environment served by a Paperclip
// sandbox-provider plugin (the folder sandbox built on the published SDK, loaded as ENVRUN_PAPERCLIP_PLUGINS
// loads it): the plugin sees the run's identity, the provision command runs in its sandbox, the adapter's
// commands run there through the target's runner, and the release ends the sandbox with a receipt.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionWorkspace } from '@paperclipai/shared';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createEnvironmentRunOrchestrator, type EnvironmentRunOrchestrator } from '../../client/orchestrator/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { tempWorkspace } from '../support/runs.js';

const PLUGIN = fileURLToPath(new URL('../fixtures/paperclip-plugin', import.meta.url));
let h: Harness;
let orchestrator: EnvironmentRunOrchestrator;

beforeAll(async () => {
  h = await createHarness({ paperclipPlugins: [PLUGIN] });
  orchestrator = await createEnvironmentRunOrchestrator({ client: h.client, environments: h.store });
});
afterAll(async () => {
  await orchestrator?.close();
  await h?.close();
});

interface Call {
  method: string;
  providerLeaseId: string | null;
  runId: string | null;
  companyId?: string;
  agentId?: string | null;
  adapterType?: string | null;
  executionWorkspaceId?: string | null;
}

it("acquire, realize, run a command and release through Paperclip's calls on a plugin's sandbox", async () => {
  const companyId = uniqueId('co');
  const rootDir = join(inject('tmpRoot'), uniqueId('plugin-sandboxes'));
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'folder',
    driver: 'sandbox',
    config: { provider: 'folder-sandbox', rootDir },
  });
  const heartbeatRunId = randomUUID();
  const agentId = randomUUID();
  const workspaceId = randomUUID();
  const persisted = { id: workspaceId, mode: 'isolated_workspace' } as Pick<ExecutionWorkspace, 'id' | 'mode'>;
  const acquired = await orchestrator.acquireForRun({
    companyId,
    selectedEnvironmentId: env.id,
    localEnvironmentId: randomUUID(),
    adapterType: 'claude_local',
    issueId: null,
    heartbeatRunId,
    agentId,
    persistedExecutionWorkspace: persisted,
    executionWorkspaceSettings: null,
  });
  expect(acquired.lease.providerLeaseId).toMatch(/^folder:\/\//);
  const cwd = tempWorkspace();
  writeFileSync(join(cwd, 'input.txt'), 'from the control plane\n');
  const result = await orchestrator.realizeForRun({
    environment: acquired.environment,
    lease: acquired.lease,
    adapterType: 'claude_local',
    companyId,
    issueId: null,
    heartbeatRunId,
    executionWorkspace: {
      baseCwd: cwd,
      source: 'project_primary',
      projectId: null,
      workspaceId: null,
      repoUrl: null,
      repoRef: null,
      strategy: 'project_primary',
      cwd,
      branchName: null,
      worktreePath: null,
      warnings: [],
      created: false,
    },
    effectiveExecutionWorkspaceMode: 'isolated_workspace',
    persistedExecutionWorkspace: null,
  });
  const target = result.executionTarget;
  if (target?.kind !== 'remote' || target.transport !== 'sandbox') throw new Error('expected a sandbox target');
  expect(target.remoteCwd.startsWith(rootDir)).toBe(true); // the plugin's folder, not the control plane's
  expect(readFileSync(join(target.remoteCwd, 'input.txt'), 'utf8')).toBe('from the control plane\n');

  const ran = await target.runner.execute({ command: 'sh', args: ['-c', 'pwd; echo made > made.txt'], env: {} });
  expect(ran).toMatchObject({ exitCode: 0, stdout: `${target.remoteCwd}\n` });

  const { released, errors } = await orchestrator.releaseForRun({ heartbeatRunId, companyId, agentId });
  expect(errors).toEqual([]);
  expect(released).toHaveLength(1);
  expect(released[0]!.lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
  expect(released[0]!.lease.metadata).toMatchObject({
    termination: { providerLeaseId: acquired.lease.providerLeaseId, state: 'destroyed' },
  });
  expect(existsSync(target.remoteCwd)).toBe(false);
  expect(readFileSync(join(cwd, 'made.txt'), 'utf8')).toBe('made\n'); // synced back

  const calls = readFileSync(join(rootDir, '.calls.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Call);
  expect(calls.filter((c) => c.method === 'environmentAcquireLease')).toEqual([
    expect.objectContaining({
      runId: heartbeatRunId,
      companyId,
      agentId,
      adapterType: 'claude_local',
      executionWorkspaceId: workspaceId,
    }),
  ]);
  const later = calls.filter((c) => c.method !== 'environmentAcquireLease' && c.method !== 'environmentValidateConfig');
  expect(later.length).toBeGreaterThan(2);
  for (const c of later) expect(c.providerLeaseId, c.method).toBe(acquired.lease.providerLeaseId);
});

it('stop_and_retain stops a reused plugin sandbox and keeps it; keep_running leaves it running; archive destroys it', async () => {
  const companyId = uniqueId('co');
  const rootDir = join(inject('tmpRoot'), uniqueId('plugin-sandboxes'));
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'reused-folder',
    driver: 'sandbox',
    config: { provider: 'folder-sandbox', rootDir, reuseLease: true, stopOnRelease: true },
  });
  const calls = () =>
    readFileSync(join(rootDir, '.calls.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Call);
  const run = async (disposition: 'stop_and_retain' | 'keep_running') => {
    const heartbeatRunId = randomUUID();
    const agentId = randomUUID();
    const acquired = await orchestrator.acquireForRun({
      companyId,
      selectedEnvironmentId: env.id,
      localEnvironmentId: randomUUID(),
      adapterType: 'claude_local',
      issueId: null,
      heartbeatRunId,
      agentId,
      persistedExecutionWorkspace: null,
      executionWorkspaceSettings: null,
    });
    const before = calls().length;
    const { released, errors } = await orchestrator.releaseForRun({
      heartbeatRunId,
      companyId,
      agentId,
      providerResourceDisposition: disposition,
    });
    expect(errors).toEqual([]);
    return {
      lease: released[0]!.lease,
      during: calls()
        .slice(before)
        .map((c) => c.method),
    };
  };

  const first = await run('stop_and_retain');
  expect(first.during).toContain('environmentReleaseLease'); // the plugin was told to stop it
  expect(first.during).not.toContain('environmentDestroyLease');
  expect(first.lease.metadata).toMatchObject({
    kept: true,
    termination: { providerLeaseId: first.lease.providerLeaseId, state: 'stopped' },
  });
  const folder = join(rootDir, (first.lease.providerLeaseId ?? '').replace(/^folder:\/\//, ''));
  expect(existsSync(folder)).toBe(true); // stopped, kept
  const second = await run('keep_running');
  expect(second.lease.providerLeaseId).toBe(first.lease.providerLeaseId); // the same sandbox, reused
  expect(second.during).not.toContain('environmentReleaseLease');
  expect(second.lease.metadata).toMatchObject({ kept: true });
  expect(second.lease.metadata?.termination).toBeUndefined();

  const archived = await h.admin.archiveEnvironment(companyId, env.id);
  expect(archived.keptResources).toMatchObject({ destroyed: 1, failed: 0 });
  expect(calls().at(-1)).toMatchObject({
    method: 'environmentDestroyLease',
    providerLeaseId: first.lease.providerLeaseId,
  });
  expect(existsSync(folder)).toBe(false);
});
