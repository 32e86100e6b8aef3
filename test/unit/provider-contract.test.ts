// The provider contract, versions 1 and 2: a version 1 module keeps working through the adapter, every
// version 2 reply is checked, and the sandbox driver hands each call the lease as stored and the run's
// identity, resuming first a lease this process did not acquire (two drivers over one provider module:
// two workers, or one before and after a restart).
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  RunRequestSchema,
  type Environment,
  type EnvironmentLease,
  type RealizableRequest,
  type WorkspaceRealizationRecord,
} from '../../contracts/index.js';
import { checkedProvider } from '../../drivers/providers/checked.js';
import type { LeaseCallContext, ProviderCallContext, SandboxProvider } from '../../drivers/providers/contract.js';
import { ProviderRegistry, fromV1, loadProviderModule } from '../../drivers/providers/load.js';
import { createSandboxDriver } from '../../drivers/sandbox.js';
import type { EnvironmentDriver, StepContext } from '../../drivers/types.js';

const fixtures = mkdtempSync(join(tmpdir(), 'envrun-contract-'));
for (const name of ['dirbox.mjs', 'recorder.mjs'])
  copyFileSync(fileURLToPath(new URL(`../fixtures/providers/${name}`, import.meta.url)), join(fixtures, name));

const ctx: ProviderCallContext = {
  companyId: 'co-1',
  environmentId: 'env-1',
  heartbeatRunId: 'run-1',
  leaseId: 'lease-1',
  agentId: 'agent-1',
  adapterType: 'process',
  executionWorkspaceId: null,
  issueId: null,
  requestedExpiresAt: null,
  attempt: 1,
};
const lease = (providerLeaseId: string) => ({ providerLeaseId, metadata: {}, expiresAt: null });

describe('version 1 modules', () => {
  it('load as version 2 providers: async validation, severities, no receipt, providerLeaseId from the lease', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'envrun-v1-'));
    const dirbox = await loadProviderModule(join(fixtures, 'dirbox.mjs'), { dataDir });
    expect(dirbox.contractVersion).toBe(2);
    expect(await dirbox.validateConfig({ provider: 'dirbox', label: 'x' })).toEqual({
      config: { provider: 'dirbox', label: 'x' },
      warnings: [],
    });
    await expect(dirbox.validateConfig({ provider: 'dirbox', label: 5 })).rejects.toThrow(
      'config.label: must be a string',
    );
    expect(await dirbox.probe({}, { companyId: 'co-1', environmentId: 'env-1' })).toEqual({
      ok: true,
      diagnostics: [{ severity: 'info', message: `dirbox root ${join(dataDir, 'dirbox')}` }],
    });
    const acquired = await dirbox.acquireLease({}, { ...ctx, idempotencyKey: 'wf-1', reuseKey: null });
    const local = mkdtempSync(join(tmpdir(), 'envrun-v1-local-'));
    writeFileSync(join(local, 'a.txt'), 'a');
    const realized = await dirbox.realizeWorkspace({}, { ...ctx, lease: acquired, localPath: local });
    expect(readFileSync(join(realized.cwd, 'a.txt'), 'utf8')).toBe('a');
    expect(await dirbox.resumeLease({}, { ...ctx, lease: acquired })).toMatchObject({
      providerLeaseId: acquired.providerLeaseId,
    });
    expect(
      await dirbox.releaseLease(
        {},
        { ...ctx, lease: acquired, keep: false, cancelActiveWork: false, syncBackTo: null },
      ),
    ).toEqual({});
    expect(await dirbox.resumeLease({}, { ...ctx, lease: acquired })).toBeNull();
  });

  it('a failed version 1 probe reports its lines as errors, and an off-contract one names the provider', async () => {
    const failing = fromV1({
      ...(await import(join(fixtures, 'dirbox.mjs'))).createProvider({ dataDir: fixtures }),
      probe: async () => ({ ok: false, diagnostics: ['no root'] }),
    });
    expect(await failing.probe({}, { companyId: 'c', environmentId: 'e' })).toEqual({
      ok: false,
      diagnostics: [{ severity: 'error', message: 'no root' }],
    });
    const liar = fromV1({ ...failing, contractVersion: undefined, probe: async () => ({ ok: 'yes' }) } as never);
    await expect(liar.probe({}, { companyId: 'c', environmentId: 'e' })).rejects.toThrow(
      /^sandbox provider "dirbox" returned an invalid reply to probe: reply\.ok/,
    );
  });
});

describe('version 2 modules', () => {
  it('load as they are; an unknown version is refused, naming it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'envrun-v2-'));
    const recorder = await loadProviderModule(join(fixtures, 'recorder.mjs'), { dataDir });
    expect(recorder.contractVersion).toBe(2);
    expect(await recorder.validateConfig({ provider: 'recorder', label: ' x ' })).toEqual({
      config: { provider: 'recorder', label: 'x', realizeAt: 'sandbox' },
      warnings: [],
    });
    const future = join(fixtures, 'future.mjs');
    writeFileSync(
      future,
      `export const provider = { ...(await import(${JSON.stringify(join(fixtures, 'recorder.mjs'))})).createProvider({ dataDir: '/tmp' }), contractVersion: 3 };\n`,
    );
    await expect(loadProviderModule(future, { dataDir })).rejects.toThrow(
      /provider "recorder" from .*future\.mjs declares contractVersion 3; this envrun supports 1 and 2/,
    );
    expect(() => new ProviderRegistry([{ ...recorder, contractVersion: 1 } as never])).toThrow(
      /not a contract version 2 provider/,
    );
  });
});

describe('checked version 2 replies', () => {
  const base = {
    contractVersion: 2 as const,
    key: 'odd',
    validateConfig: async (c: Record<string, unknown>) => ({ config: c, warnings: [] }),
    probe: async () => ({ ok: true, diagnostics: [] }),
    acquireLease: async () => lease('odd://1'),
    resumeLease: async (_c: unknown, x: LeaseCallContext) => x.lease,
    releaseLease: async () => ({}),
    destroyLease: async () => ({}),
    realizeWorkspace: async () => ({ cwd: '/sandbox/ws', metadata: {} }),
    execute: async () => ({ exitCode: 0, signal: null, timedOut: false, stdout: '', stderr: '' }),
  } satisfies SandboxProvider;
  const on = { ...ctx, lease: lease('odd://1') };
  const release = { ...on, keep: false, cancelActiveWork: false, syncBackTo: null };

  it('a receipt is for the lease of the call, nothing else', async () => {
    const p = checkedProvider({
      ...base,
      releaseLease: async () => ({ receipt: { providerLeaseId: 'odd://1', state: 'destroyed' as const } }),
      destroyLease: async () => ({ receipt: { providerLeaseId: 'odd://2', state: 'destroyed' as const } }),
    });
    expect(await p.releaseLease({}, release)).toEqual({ receipt: { providerLeaseId: 'odd://1', state: 'destroyed' } });
    await expect(p.destroyLease({}, { ...on, cancelActiveWork: true })).rejects.toThrow(
      'sandbox provider "odd" returned an invalid reply to destroyLease: reply.receipt.providerLeaseId: is "odd://2", not the lease\'s "odd://1"',
    );
    const gone = checkedProvider({ ...base, releaseLease: async () => ({ receipt: { state: 'gone' } }) as never });
    await expect(gone.releaseLease({}, release)).rejects.toThrow(/reply\.receipt\.(state|providerLeaseId)/);
  });

  it('resume answers for the same lease, or null', async () => {
    expect(await checkedProvider({ ...base, resumeLease: async () => null }).resumeLease({}, on)).toBeNull();
    await expect(
      checkedProvider({ ...base, resumeLease: async () => lease('odd://other') }).resumeLease({}, on),
    ).rejects.toThrow(/invalid reply to resumeLease: reply\.providerLeaseId: is "odd:\/\/other"/);
  });

  it('probe diagnostics carry a severity; validation returns a config and warnings; realize an absolute cwd', async () => {
    const where = { companyId: 'c', environmentId: 'e' };
    await expect(
      checkedProvider({ ...base, probe: async () => ({ ok: true, diagnostics: ['plain'] }) as never }).probe({}, where),
    ).rejects.toThrow(/invalid reply to probe: reply\.diagnostics\.0/);
    await expect(
      checkedProvider({
        ...base,
        probe: async () => ({ ok: false, diagnostics: [{ severity: 'fatal', message: 'x' }] }) as never,
      }).probe({}, where),
    ).rejects.toThrow(/reply\.diagnostics\.0\.severity/);
    await expect(
      checkedProvider({ ...base, validateConfig: async (c) => c as never }).validateConfig({ a: 1 }),
    ).rejects.toThrow(/invalid reply to validateConfig: reply\.config/);
    await expect(
      checkedProvider({ ...base, realizeWorkspace: async () => ({ cwd: 'ws', metadata: {} }) }).realizeWorkspace(
        {},
        {
          ...on,
          localPath: '/l',
        },
      ),
    ).rejects.toThrow(/invalid reply to realizeWorkspace: reply\.cwd: must be an absolute path/);
  });
});

// ---- the sandbox driver over a provider module, in two "processes" ----

interface Call {
  op: string;
  instance: string;
  lease?: { providerLeaseId: string; metadata: Record<string, unknown>; expiresAt: string | null };
  [k: string]: unknown;
}

async function twoWorkers() {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-two-'));
  const load = async () => {
    const registry = new ProviderRegistry([]);
    registry.register(await loadProviderModule(join(fixtures, 'recorder.mjs'), { dataDir }));
    return createSandboxDriver(registry);
  };
  const [a, b] = [await load(), await load()];
  const calls = (): Call[] =>
    readFileSync(join(dataDir, 'recorder', 'calls.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Call);
  return { a, b, calls };
}

const ENV_ID = '2b7e4c1a-9d3f-4e6b-a1c2-3d4e5f6a7b8c';
const now = new Date().toISOString();
const expiresAt = new Date(Date.now() + 3600_000).toISOString();
const environment: Environment = {
  id: ENV_ID,
  companyId: 'co-1',
  name: 'rec',
  description: null,
  driver: 'sandbox',
  status: 'active',
  config: { provider: 'recorder' },
  metadata: null,
  createdAt: now,
  updatedAt: now,
};
const leaseRow: EnvironmentLease = {
  id: 'lease-1',
  companyId: 'co-1',
  environmentId: ENV_ID,
  executionWorkspaceId: '6f1d3c1e-2a5b-4c9d-8e7f-0a1b2c3d4e5f',
  issueId: 'issue-9',
  heartbeatRunId: 'run-1',
  status: 'active',
  leasePolicy: 'ephemeral',
  provider: 'recorder',
  providerLeaseId: null,
  acquiredAt: now,
  lastUsedAt: now,
  expiresAt,
  releasedAt: null,
  failureReason: null,
  cleanupStatus: null,
  metadata: null,
  createdAt: now,
  updatedAt: now,
};
const step: StepContext = { attempt: 1, idempotencyKey: 'wf-run-1' };

/** The control plane's own workspace id, for runs whose workspace envrun keeps no row of. */
let external: string | null = null;

function request(cwd: string): RealizableRequest {
  return RunRequestSchema.parse({
    companyId: 'co-1',
    heartbeatRunId: 'run-1',
    environmentId: environment.id,
    ...(external
      ? { externalExecutionWorkspaceId: external }
      : { executionWorkspaceId: leaseRow.executionWorkspaceId }),
    issueId: 'issue-9',
    agentId: 'agent-7',
    adapterType: 'codex_local',
    workspace: { baseCwd: cwd, cwd },
  }) as RealizableRequest;
}

/** Acquires on `driver` and returns the lease row as the acquire step stores it. */
async function acquireOn(driver: EnvironmentDriver, cwd: string): Promise<EnvironmentLease> {
  const row = external ? { ...leaseRow, executionWorkspaceId: null } : leaseRow;
  const acquired = await driver.acquire(step, { environment, lease: row, request: request(cwd) });
  return {
    ...row,
    providerLeaseId: acquired.providerLeaseId,
    metadata: { ...acquired.metadata, acquired: true },
  };
}

async function realizeOn(driver: EnvironmentDriver, stored: EnvironmentLease, cwd: string) {
  const req = request(cwd);
  const record = await driver.realize!(step, {
    environment,
    lease: stored,
    request: req,
    realizationRequest: {
      version: 1,
      adapterType: req.adapterType,
      companyId: 'co-1',
      environmentId: environment.id,
      executionWorkspaceId: req.executionWorkspaceId,
      issueId: req.issueId,
      heartbeatRunId: 'run-1',
      requestedMode: null,
      source: {
        kind: 'project_primary',
        localPath: cwd,
        projectId: null,
        projectWorkspaceId: null,
        repoUrl: null,
        repoRef: null,
        strategy: 'project_primary',
        branchName: null,
        worktreePath: null,
      },
      runtimeOverlay: { provisionCommand: 'echo made > made.txt', teardownCommand: null, cleanupCommand: null },
    },
    provisionTimeoutMs: 10_000,
  });
  return { record: record!, lease: { ...stored, metadata: { ...stored.metadata, workspaceRealization: record } } };
}

describe('the sandbox driver over a version 2 module', () => {
  it('a worker that did not acquire resumes the lease first, from the stored metadata; the acquirer does not', async () => {
    const { a, b, calls } = await twoWorkers();
    const cwd = mkdtempSync(join(tmpdir(), 'envrun-two-ws-'));
    const stored = await acquireOn(a, cwd);
    const acquired = calls()[0]!;
    const token = (stored.metadata!.provider as { token: string }).token;
    expect(typeof token).toBe('string');

    // Worker B realizes: resume first, handed the lease row's record, then every call gets the resumed lease.
    const realized = await realizeOn(b, stored, cwd);
    const onB = calls().slice(1);
    expect(onB.map((c) => c.op)).toEqual(['resumeLease', 'realizeWorkspace', 'execute']);
    expect(onB.every((c) => c.instance !== acquired.instance)).toBe(true);
    expect(onB[0]!.lease).toEqual({
      providerLeaseId: stored.providerLeaseId,
      metadata: stored.metadata!.provider,
      expiresAt,
    });
    for (const c of onB.slice(1))
      expect(c.lease).toMatchObject({
        providerLeaseId: stored.providerLeaseId,
        metadata: { token, resumedBy: onB[0]!.instance },
      });
    expect(readFileSync(join(realized.record.remote.path, 'made.txt'), 'utf8')).toBe('made\n');
    // The resumed lease is kept on the realization record: later calls start from it.
    expect((realized.record as WorkspaceRealizationRecord).rebuild.providerLease).toMatchObject({
      metadata: { token, resumedBy: onB[0]!.instance },
    });

    // B executes again: it holds the lease now, no second resume.
    await b.execute(
      step,
      { environment, lease: realized.lease, record: realized.record },
      {
        command: 'true',
        args: [],
        env: {},
        timeoutMs: 5000,
      },
    );
    expect(
      calls()
        .slice(4)
        .map((c) => c.op),
    ).toEqual(['execute']);

    // A, which acquired it, releases without resuming; the receipt is reported as the lease's termination.
    const report = await a.release(step, { environment, lease: realized.lease, keep: false });
    expect(
      calls()
        .slice(5)
        .map((c) => c.op),
    ).toEqual(['releaseLease']);
    expect(calls()[5]!.lease).toMatchObject({ metadata: { token, resumedBy: onB[0]!.instance } });
    expect(report).toEqual({
      metadata: { termination: { providerLeaseId: stored.providerLeaseId, state: 'destroyed' } },
    });
  });

  it('a resource that is gone: realize and exec fail without retrying, release records it as gone', async () => {
    const { a, b, calls } = await twoWorkers();
    const cwd = mkdtempSync(join(tmpdir(), 'envrun-two-ws-'));
    const stored = await acquireOn(a, cwd);
    await a.release(step, { environment, lease: stored, keep: false }); // the sandbox is gone
    await expect(realizeOn(b, stored, cwd)).rejects.toMatchObject({
      name: 'NonRetryableError',
      message: `sandbox provider "recorder" no longer has the resource of lease lease-1 (${stored.providerLeaseId})`,
    });
    await expect(
      b.execute(
        step,
        { environment, lease: stored, record: null },
        { command: 'true', args: [], env: {}, timeoutMs: 5000 },
      ),
    ).rejects.toMatchObject({ name: 'NonRetryableError' });
    expect(await b.release(step, { environment, lease: stored, keep: false })).toEqual({
      metadata: { termination: { state: 'gone' } },
    });
    expect(calls().map((c) => c.op)).toEqual([
      'acquireLease',
      'releaseLease',
      'resumeLease',
      'resumeLease',
      'resumeLease',
    ]);
  });

  it('every call carries the run identity: company, environment, run, agent, adapter, workspace, issue, expiry', async () => {
    const { a, b, calls } = await twoWorkers();
    const cwd = mkdtempSync(join(tmpdir(), 'envrun-two-ws-'));
    const stored = await acquireOn(a, cwd);
    const realized = await realizeOn(b, stored, cwd);
    await b.resolveTarget(step, { environment, lease: realized.lease, record: realized.record });
    await a.release(step, { environment, lease: realized.lease, keep: false, cancelActiveWork: true });
    const all = calls();
    expect(all.map((c) => c.op)).toEqual([
      'acquireLease',
      'resumeLease',
      'realizeWorkspace',
      'execute',
      'resolveTarget',
      'releaseLease',
    ]);
    for (const c of all)
      expect(c, c.op).toMatchObject({
        companyId: 'co-1',
        environmentId: ENV_ID,
        heartbeatRunId: 'run-1',
        agentId: 'agent-7',
        adapterType: 'codex_local',
        executionWorkspaceId: leaseRow.executionWorkspaceId,
        issueId: 'issue-9',
        requestedExpiresAt: expiresAt,
      });
    expect(all.at(-1)).toMatchObject({ cancelActiveWork: true, keep: false });
  });

  it("a control plane's own workspace id (no envrun row) reaches every call as executionWorkspaceId", async () => {
    external = 'cp-workspace-1';
    try {
      const { a, b, calls } = await twoWorkers();
      const cwd = mkdtempSync(join(tmpdir(), 'envrun-two-ws-'));
      const stored = await acquireOn(a, cwd);
      expect(stored.executionWorkspaceId).toBeNull();
      const realized = await realizeOn(b, stored, cwd);
      await a.release(step, { environment, lease: realized.lease, keep: false, cancelActiveWork: false });
      const all = calls();
      expect(all.map((c) => c.op)).toContain('releaseLease');
      for (const c of all) expect(c, c.op).toMatchObject({ executionWorkspaceId: 'cp-workspace-1' });
    } finally {
      external = null;
    }
  });
});
