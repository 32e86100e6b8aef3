// The Paperclip plugin host's provider side, on a real plugin worker: the folder sandbox of
// test/fixtures/paperclip-plugin (written with the published SDK), loaded the way ENVRUN_PAPERCLIP_PLUGINS
// loads it. Acquire is idempotent per step and shared per reuse key, files move with environmentSyncIn or over
// environmentExecute and come back through the safe copy, releases end with a receipt, replies are checked.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NonRetryableError } from '../../contracts/errors.js';
import type { ProviderCallContext, ProviderLease, SandboxProvider } from '../../drivers/providers/contract.js';
import { loadProviders, type ProviderRegistry } from '../../drivers/providers/load.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/paperclip-plugin', import.meta.url));
const EXEC_ONLY = join(FIXTURE, 'exec-only');
const tmp = mkdtempSync(join(tmpdir(), 'envrun-paperclip-'));
const dataDir = join(tmp, 'data');
const logged: string[] = [];
const logger = {
  debug: () => undefined,
  info: (_f: Record<string, unknown>, m: string) => logged.push(m),
  warn: (_f: Record<string, unknown>, m: string) => logged.push(m),
  error: (_f: Record<string, unknown>, m: string) => logged.push(m),
};
let registry: ProviderRegistry;
let provider: SandboxProvider<any>;
let execOnly: SandboxProvider<any>;

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
let n = 0;
/** A fresh root folder for the plugin's sandboxes and its validated config. */
async function setup(p: SandboxProvider<any>, extra: Record<string, unknown> = {}) {
  const rootDir = join(tmp, `root-${++n}`);
  const { config } = await p.validateConfig({ provider: p.key, rootDir, ...extra });
  return { rootDir, config };
}
const calls = (rootDir: string) =>
  readFileSync(join(rootDir, '.calls.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { method: string; providerLeaseId: string | null; pid: number });
const folders = (rootDir: string) => readdirSync(rootDir).filter((f) => !f.startsWith('.'));
const release = (lease: ProviderLease, extra: Partial<{ keep: boolean; syncBackTo: string | null }> = {}) => ({
  ...ctx,
  lease,
  keep: false,
  cancelActiveWork: false,
  syncBackTo: null,
  ...extra,
});

beforeAll(async () => {
  registry = await loadProviders({ dataDir, providerModules: [], paperclipPlugins: [FIXTURE, EXEC_ONLY] }, { logger });
  provider = registry.get('folder-sandbox')!;
  execOnly = registry.get('folder-sandbox-exec')!;
}, 60_000);
afterAll(async () => {
  await registry?.close();
});

describe('loading', () => {
  it('registers each sandbox_provider driver under its key; a key held elsewhere is refused naming both', async () => {
    expect(registry.keys()).toEqual(
      expect.arrayContaining(['fake', 'bubblewrap', 'folder-sandbox', 'folder-sandbox-exec']),
    );
    expect(registry.sourceOf('folder-sandbox')).toBe(`Paperclip plugin envrun-test.folder-sandbox (${FIXTURE})`);
    await expect(loadProviders({ dataDir, providerModules: [], paperclipPlugins: [FIXTURE, FIXTURE] })).rejects.toThrow(
      `sandbox provider key "folder-sandbox": Paperclip plugin envrun-test.folder-sandbox (${FIXTURE}) declares it, and Paperclip plugin envrun-test.folder-sandbox (${FIXTURE}) already has it`,
    );
    const clash = join(tmp, 'clash');
    mkdirSync(clash);
    writeFileSync(
      join(clash, 'package.json'),
      JSON.stringify({ paperclipPlugin: { manifest: 'm.json', worker: 'w.mjs' } }),
    );
    const manifest = { id: 'clash', apiVersion: 1, version: '1.0.0' };
    const drivers = [{ driverKey: 'fake', kind: 'sandbox_provider', displayName: 'Fake' }];
    writeFileSync(join(clash, 'm.json'), JSON.stringify({ ...manifest, environmentDrivers: drivers }));
    await expect(loadProviders({ dataDir, providerModules: [], paperclipPlugins: [clash] })).rejects.toThrow(
      `sandbox provider key "fake": Paperclip plugin clash (${clash}) declares it, and built-in provider "fake" already has it`,
    );
    writeFileSync(join(clash, 'm.json'), JSON.stringify({ ...manifest, apiVersion: 2 }));
    await expect(loadProviders({ dataDir, providerModules: [], paperclipPlugins: [clash] })).rejects.toThrow(
      /manifest\.apiVersion: must be 1/,
    );
    writeFileSync(join(clash, 'package.json'), JSON.stringify({ paperclipPlugin: { manifest: '../m.json' } }));
    await expect(loadProviders({ dataDir, providerModules: [], paperclipPlugins: [clash] })).rejects.toThrow(
      /paperclipPlugin\.manifest "\.\.\/m\.json" is not a file inside the package/,
    );
  });
});

describe('the folder sandbox plugin as a provider', () => {
  it('validates through the plugin (naming its fields), keeps envrun keys out of its config, probes with severity', async () => {
    await expect(provider.validateConfig({ provider: 'folder-sandbox', rootDir: 'relative' })).rejects.toThrow(
      'plugin "envrun-test.folder-sandbox" driver "folder-sandbox" refused the config: config.rootDir: must be an absolute path',
    );
    const rootDir = join(tmp, 'validated');
    const out = await provider.validateConfig({
      provider: 'folder-sandbox',
      rootDir: `${rootDir}/x/..`,
      leasePolicy: 'ephemeral',
      faults: {},
    });
    expect(out).toEqual({
      config: { provider: 'folder-sandbox', rootDir, leasePolicy: 'ephemeral', faults: {} },
      warnings: ['config.faults: injected faults are on'],
    });
    const probe = await provider.probe(out.config, { companyId: 'co-1', environmentId: 'env-1' });
    expect(probe).toEqual({
      ok: true,
      summary: `folder sandboxes under ${rootDir}`,
      diagnostics: [
        { severity: 'info', message: `sandboxes are folders under ${rootDir}`, code: 'root' },
        { severity: 'warning', message: 'a folder sandbox isolates nothing', code: 'no_isolation' },
      ],
    });
  });

  it('a retried acquire adopts the sandbox the first made, also in a new process; a reuse key shares one', async () => {
    const { rootDir, config } = await setup(provider);
    const first = await provider.acquireLease(config, { ...ctx, idempotencyKey: 'wf-a', reuseKey: null });
    const retry = await provider.acquireLease(config, { ...ctx, attempt: 2, idempotencyKey: 'wf-a', reuseKey: null });
    expect(retry.providerLeaseId).toBe(first.providerLeaseId);
    expect(folders(rootDir)).toEqual(['run-1-1']);
    // Another process of the same host (its own registry and plugin worker): the journal, then resume.
    const again = await loadProviders({ dataDir, providerModules: [], paperclipPlugins: [FIXTURE] }, { logger });
    try {
      const p2 = again.get('folder-sandbox')!;
      const adopted = await p2.acquireLease(config, { ...ctx, attempt: 3, idempotencyKey: 'wf-a', reuseKey: null });
      expect(adopted).toMatchObject({ providerLeaseId: first.providerLeaseId, metadata: { resumed: true } });
    } finally {
      await again.close();
    }
    expect(folders(rootDir)).toEqual(['run-1-1']);
    expect(calls(rootDir).map((c) => c.method)).toEqual([
      'environmentAcquireLease',
      'environmentResumeLease',
      'environmentResumeLease',
    ]);

    const shared = { ...ctx, reuseKey: 'env-1' };
    const a = await provider.acquireLease(config, { ...shared, heartbeatRunId: 'run-2', idempotencyKey: 'wf-b' });
    const b = await provider.acquireLease(config, { ...shared, heartbeatRunId: 'run-3', idempotencyKey: 'wf-c' });
    expect(b.providerLeaseId).toBe(a.providerLeaseId);
    // Kept at release: the plugin is not asked to end it; destroyed later, with its receipt.
    expect(await provider.releaseLease(config, release(a, { keep: true }))).toEqual({});
    expect(await provider.destroyLease(config, { ...ctx, lease: b, cancelActiveWork: true })).toEqual({
      receipt: { providerLeaseId: a.providerLeaseId, state: 'destroyed' },
    });
    expect(folders(rootDir)).toEqual(['run-1-1']);
    // Once destroyed, the same reuse key gets a new sandbox.
    const c = await provider.acquireLease(config, { ...shared, heartbeatRunId: 'run-4', idempotencyKey: 'wf-d' });
    expect(c.providerLeaseId).toBe('folder://run-4-1');
    expect(await provider.resumeLease(config, { ...ctx, lease: a })).toBeNull();
  }, 60_000);

  for (const which of ['environmentSyncIn', 'environmentExecute'] as const) {
    it(`realizes with files moved by ${which}, executes, syncs back safely and releases with a receipt`, async () => {
      const p = which === 'environmentSyncIn' ? provider : execOnly;
      const { rootDir, config } = await setup(p);
      const local = mkdtempSync(join(tmp, 'ws-'));
      writeFileSync(join(local, 'a.txt'), 'from the host\n');
      mkdirSync(join(local, 'sub'));
      writeFileSync(join(local, 'sub', 'b.txt'), 'b\n');
      const lease = await p.acquireLease(config, { ...ctx, idempotencyKey: `wf-${which}`, reuseKey: null });
      const lines: string[] = [];
      const realized = await p.realizeWorkspace(config, {
        ...ctx,
        lease,
        localPath: local,
        onProgress: (l) => lines.push(l),
      });
      expect(realized).toMatchObject({
        cwd: join(rootDir, 'run-1-1', 'workspace'),
        metadata: { filesMovedWith: which },
      });
      expect(lines.join('\n')).toContain(`with ${which}: 2 written`);
      const run = (command: string, args: string[]) =>
        p.execute(
          config,
          { ...ctx, lease },
          { command, args, cwd: realized.cwd, env: { PATH: '/usr/bin:/bin', ONLY: '1' }, timeoutMs: 10_000 },
        );
      expect(await run('cat', ['sub/b.txt'])).toEqual({
        exitCode: 0,
        signal: null,
        timedOut: false,
        stdout: 'b\n',
        stderr: '',
      });
      expect((await run('env', [])).stdout.split('\n').filter(Boolean).sort()).toEqual([
        'ONLY=1',
        'PATH=/usr/bin:/bin',
      ]);
      // The agent changes a file, adds one, plants git metadata and a link out of the tree.
      await run('sh', [
        '-c',
        'echo changed > a.txt && echo new > c.txt && mkdir .git && echo x > .git/config && ln -s /etc/passwd out',
      ]);
      const report = await p.releaseLease(config, release(lease, { syncBackTo: local }));
      expect(report.receipt).toEqual({ providerLeaseId: lease.providerLeaseId, state: 'destroyed' });
      expect(report.syncBack).toMatchObject({ copied: 2, skippedCount: 2 });
      expect(readFileSync(join(local, 'a.txt'), 'utf8')).toBe('changed\n');
      expect(readFileSync(join(local, 'c.txt'), 'utf8')).toBe('new\n');
      expect(existsSync(join(local, '.git'))).toBe(false);
      expect(existsSync(join(local, 'out'))).toBe(false);
      expect(folders(rootDir)).toEqual([]);
      const methods = calls(rootDir).map((c) => c.method);
      expect(methods.includes('environmentSyncIn')).toBe(which === 'environmentSyncIn');
      expect(methods.includes('environmentSyncOut')).toBe(which === 'environmentSyncIn');
      // The staging folders are gone.
      expect(
        readdirSync(
          join(
            dataDir,
            'paperclip',
            which === 'environmentSyncIn' ? 'envrun-test.folder-sandbox' : 'envrun-test.folder-sandbox-exec-only',
            p.key,
            'staging',
          ),
        ),
      ).toEqual([]);
    }, 60_000);
  }

  it('a stopped receipt on an ended lease is followed by destroy; a sandbox at the host folder is refused', async () => {
    const { rootDir, config } = await setup(provider, { stopOnRelease: true });
    const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: 'wf-stop', reuseKey: null });
    expect(await provider.releaseLease(config, release(lease))).toEqual({
      receipt: { providerLeaseId: lease.providerLeaseId, state: 'destroyed' },
    });
    expect(calls(rootDir).map((c) => c.method)).toEqual([
      'environmentAcquireLease',
      'environmentReleaseLease',
      'environmentDestroyLease',
    ]);
    expect(folders(rootDir)).toEqual([]);

    const local = mkdtempSync(join(tmp, 'host-'));
    writeFileSync(join(local, 'keep.txt'), 'mine\n');
    const hostile = await setup(provider, { realizeCwd: local });
    const l2 = await provider.acquireLease(hostile.config, { ...ctx, idempotencyKey: 'wf-host', reuseKey: null });
    const err = await provider
      .realizeWorkspace(hostile.config, { ...ctx, lease: l2, localPath: local })
      .catch((e: Error) => e);
    expect(err).toBeInstanceOf(NonRetryableError);
    expect((err as Error).message).toContain(`the control plane's own workspace folder ${local}`);
    expect(calls(hostile.rootDir).map((c) => c.method)).not.toContain('environmentSyncIn');
    expect(readdirSync(local)).toEqual(['keep.txt']);
  });

  it('an off-contract reply fails naming plugin, driver and method; a plugin error is retryable', async () => {
    const { config } = await setup(provider, { badReplies: ['environmentAcquireLease'] });
    const bad = await provider
      .acquireLease(config, { ...ctx, idempotencyKey: 'wf-bad', reuseKey: null })
      .catch((e: Error) => e);
    expect(bad).toBeInstanceOf(NonRetryableError);
    expect((bad as Error).message).toMatch(
      /^plugin "envrun-test\.folder-sandbox" driver "folder-sandbox" returned an invalid reply to environmentAcquireLease: reply\.providerLeaseId/,
    );
    const faulty = await setup(provider, { faults: { environmentAcquireLease: 1 } });
    const failed = await provider
      .acquireLease(faulty.config, { ...ctx, idempotencyKey: 'wf-f', reuseKey: null })
      .catch((e: Error) => e);
    expect(failed).not.toBeInstanceOf(NonRetryableError);
    expect((failed as Error & { code?: string }).code).toBe('plugin_error');
    expect((failed as Error).message).toContain('injected fault: environmentAcquireLease failed (1 of 1)');
    const ok = await provider.acquireLease(faulty.config, {
      ...ctx,
      attempt: 2,
      idempotencyKey: 'wf-f',
      reuseKey: null,
    });
    expect(ok.providerLeaseId).toBe('folder://run-1-1');
  });

  it('a plugin worker killed with SIGKILL is restarted: the next call works on the same sandbox', async () => {
    const { rootDir, config } = await setup(provider);
    const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: 'wf-kill', reuseKey: null });
    const pid = calls(rootDir).at(-1)!.pid;
    execFileSync('kill', ['-9', String(pid)]);
    // A call racing the death fails as retryable (the step's retry); once it is seen, calls wait for the new worker.
    for (let i = 0; i < 100 && !logged.some((l) => l.startsWith('plugin worker died')); i++) await sleep(50);
    const out = await provider.execute(
      config,
      { ...ctx, lease },
      { command: 'pwd', args: [], env: {}, timeoutMs: 10_000 },
    );
    expect(out.stdout.trim()).toBe(join(rootDir, 'run-1-1', 'workspace'));
    expect(calls(rootDir).at(-1)!.pid).not.toBe(pid);
    expect(await provider.releaseLease(config, release(lease))).toMatchObject({ receipt: { state: 'destroyed' } });
  }, 60_000);
});
