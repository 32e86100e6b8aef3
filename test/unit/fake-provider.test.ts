import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createFakeProvider } from '../../drivers/providers/fake.js';
import { ProviderRegistry } from '../../drivers/providers/load.js';
import type { ProviderCallContext } from '../../drivers/providers/contract.js';
import { runProcess } from '../../drivers/process.js';

const root = mkdtempSync(join(tmpdir(), 'envrun-fake-'));
const fake = createFakeProvider({ rootDir: root });
const ctx: ProviderCallContext = {
  companyId: 'co-1',
  environmentId: 'env-1',
  heartbeatRunId: 'run-1',
  leaseId: 'lease-1',
  agentId: null,
  adapterType: 'process',
  executionWorkspaceId: null,
  issueId: null,
  requestedExpiresAt: null,
  attempt: 1,
};
const validated = async (config: Record<string, unknown>) => (await fake.validateConfig(config)).config;

describe('fake provider', () => {
  it('acquires deterministically per idempotency key: a retry adopts the same resource', async () => {
    const config = await validated({ provider: 'fake' });
    const a = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-1', reuseKey: null });
    const b = await fake.acquireLease(config, { ...ctx, attempt: 2, idempotencyKey: 'wf-1', reuseKey: null });
    const c = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-2', reuseKey: null });
    expect(a.providerLeaseId).toMatch(/^fake:\/\/run-1\/[0-9a-f]{16}$/);
    expect(b.providerLeaseId).toBe(a.providerLeaseId);
    expect(c.providerLeaseId).not.toBe(a.providerLeaseId);
  });

  it('uses fake://<env> for a reused lease and keeps it at release; deletes an ephemeral one', async () => {
    const config = await validated({ provider: 'fake', reuseLease: true });
    const reused = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-3', reuseKey: 'env-1' });
    expect(reused.providerLeaseId).toBe('fake://env-1');
    const release = { cancelActiveWork: false, syncBackTo: null };
    expect(await fake.releaseLease(config, { ...ctx, ...release, lease: reused, keep: true })).toEqual({
      receipt: { providerLeaseId: 'fake://env-1', state: 'stopped' },
    });
    expect(await fake.resumeLease(config, { ...ctx, lease: reused })).toMatchObject({
      providerLeaseId: 'fake://env-1',
      metadata: { reused: true, resumed: true },
    });
    const eph = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-4', reuseKey: null });
    expect(await fake.releaseLease(config, { ...ctx, ...release, lease: eph, keep: false })).toEqual({
      receipt: { providerLeaseId: eph.providerLeaseId, state: 'destroyed' },
    });
    expect(await fake.resumeLease(config, { ...ctx, lease: eph })).toBeNull();
    // A kept one is destroyed once nothing will use it again.
    expect(await fake.destroyLease(config, { ...ctx, lease: reused, cancelActiveWork: true })).toEqual({
      receipt: { providerLeaseId: 'fake://env-1', state: 'destroyed' },
    });
    expect(await fake.resumeLease(config, { ...ctx, lease: reused })).toBeNull();
  });

  it('executes with only the explicit env: no host variable reaches the sandbox', async () => {
    process.env.HOST_SECRET_TOKEN = 'sk-live-123';
    const config = await validated({ provider: 'fake' });
    const lease = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-5', reuseKey: null });
    const src = mkdtempSync(join(tmpdir(), 'src-'));
    writeFileSync(join(src, 'file.txt'), 'hello');
    const realized = await fake.realizeWorkspace(config, { ...ctx, lease, localPath: src });
    expect(existsSync(join(realized.cwd, 'file.txt'))).toBe(true);
    const out = await fake.execute(
      config,
      { ...ctx, lease },
      { command: 'env', args: [], env: { ONLY: 'this' }, timeoutMs: 5000 },
    );
    expect(out.exitCode).toBe(0);
    const names = out.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('=')[0])
      .sort();
    expect(names).toEqual(['ONLY', 'PATH']);
    expect(out.stdout).not.toContain('sk-live-123');
  });

  it('a release waits for the commands running on the lease, or stops them with cancelActiveWork', async () => {
    const config = await validated({ provider: 'fake' });
    const release = { keep: false, syncBackTo: null };
    const waited = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-7', reuseKey: null });
    const short = fake.execute(
      config,
      { ...ctx, lease: waited },
      { command: 'sleep', args: ['1'], env: {}, timeoutMs: 20_000 },
    );
    await new Promise((r) => setTimeout(r, 100));
    await fake.releaseLease(config, { ...ctx, ...release, lease: waited, cancelActiveWork: false });
    expect(await Promise.race([short, 'still running'])).toMatchObject({ exitCode: 0 });

    const stopped = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-8', reuseKey: null });
    const started = Date.now();
    const long = fake.execute(
      config,
      { ...ctx, lease: stopped },
      { command: 'sleep', args: ['30'], env: {}, timeoutMs: 60_000 },
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(await fake.releaseLease(config, { ...ctx, ...release, lease: stopped, cancelActiveWork: true })).toEqual({
      receipt: { providerLeaseId: stopped.providerLeaseId, state: 'destroyed' },
    });
    expect(await Promise.race([long, 'still running'])).toMatchObject({ exitCode: null });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('refuses a cwd outside the sandbox', async () => {
    const config = await validated({ provider: 'fake' });
    const lease = await fake.acquireLease(config, { ...ctx, idempotencyKey: 'wf-6', reuseKey: null });
    await expect(
      fake.execute(
        config,
        { ...ctx, lease },
        { command: 'pwd', args: [], cwd: '/../../etc', env: {}, timeoutMs: 5000 },
      ),
    ).rejects.toThrow(/outside the sandbox/);
    // A sandbox-absolute path is taken inside the sandbox, never the host's.
    const out = await fake.execute(
      config,
      { ...ctx, lease },
      { command: 'pwd', args: [], cwd: '/etc', env: {}, timeoutMs: 5000 },
    );
    expect(out.stdout.trim()).toMatch(new RegExp(`^${root}/leases/run-1/[0-9a-f]{16}/etc$`));
    await expect(
      fake.execute(
        config,
        { ...ctx, lease: { providerLeaseId: 'fake://../../x', metadata: {}, expiresAt: null } },
        { command: 'pwd', args: [], env: {}, timeoutMs: 5000 },
      ),
    ).rejects.toThrow(/escapes/);
  });

  it('injects faults for the first N attempts, or always', async () => {
    const config = await validated({
      provider: 'fake',
      faults: { acquire: { fail: 2, message: 'boom' }, release: { fail: 'always' } },
    });
    await expect(
      fake.acquireLease(config, { ...ctx, attempt: 1, idempotencyKey: 'k', reuseKey: null }),
    ).rejects.toThrow('boom');
    await expect(
      fake.acquireLease(config, { ...ctx, attempt: 2, idempotencyKey: 'k', reuseKey: null }),
    ).rejects.toThrow('boom');
    const lease = await fake.acquireLease(config, { ...ctx, attempt: 3, idempotencyKey: 'k', reuseKey: null });
    await expect(
      fake.releaseLease(config, {
        ...ctx,
        attempt: 9,
        lease,
        keep: false,
        cancelActiveWork: false,
        syncBackTo: null,
      }),
    ).rejects.toThrow(/injected release failure/);
  });

  it('rejects a bad faults config naming the field', async () => {
    await expect(fake.validateConfig({ provider: 'fake', faults: { realize: { fail: 0 } } })).rejects.toThrow(
      /config\.faults\.realize\.fail/,
    );
    await expect(fake.validateConfig({ provider: 'fake', faults: { explode: { fail: 1 } } })).rejects.toThrow(
      /config\.faults/,
    );
  });
});

describe('provider registry', () => {
  it('refuses a duplicate key and a malformed key', () => {
    const registry = new ProviderRegistry([fake]);
    expect(() => registry.register(createFakeProvider({ rootDir: root }))).toThrow(
      /duplicate sandbox provider key "fake"/,
    );
    expect(() => registry.register({ ...fake, key: 'Bad Key' })).toThrow(/must match/);
  });
});

describe('runProcess', () => {
  it('times out with SIGTERM, then SIGKILL for a process that ignores it', async () => {
    const started = Date.now();
    const res = await runProcess({
      command: '/bin/sh',
      args: ['-c', 'trap "" TERM; sleep 20'],
      cwd: root,
      env: {},
      timeoutMs: 200,
      killGraceMs: 300,
    });
    expect(res.timedOut).toBe(true);
    expect(res.signal).toBe('SIGKILL');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('passes arguments without a shell: metacharacters stay literal', async () => {
    const res = await runProcess({
      command: 'echo',
      args: ['$(id); rm -rf /tmp/x && `whoami`'],
      cwd: root,
      env: {},
      timeoutMs: 5000,
    });
    expect(res.stdout).toBe('$(id); rm -rf /tmp/x && `whoami`\n');
  });
});
