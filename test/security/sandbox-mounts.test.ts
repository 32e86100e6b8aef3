// A bubblewrap environment's read-only mounts (`config.mounts`): where a mount may go in the sandbox, that
// its source is a real path inside the company's workspace roots (a link inside the roots leading out is
// refused: bwrap would bind what it leads to), and that the sandbox reads it but cannot write it.
import { MockActivityEnvironment } from '@temporalio/testing';
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { InvalidInputError } from '../../client/errors.js';
import { checkMountSources, loadTenancy, TenancyError } from '../../config/tenancy.js';
import { RunRequestSchema, type EnvironmentLease } from '../../contracts/index.js';
import { SandboxFds, SandboxLimits, sandboxArgs } from '../../drivers/providers/bubblewrap/args.js';
import { createBubblewrapProvider } from '../../drivers/providers/bubblewrap/index.js';
import { createProviders } from '../../drivers/providers/load.js';
import { createDrivers } from '../../drivers/registry.js';
import { Store } from '../../store/store.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { callContext, hasBwrap, isRoot, sandboxProvider } from '../support/sandbox.js';

/** A folder the sandbox uid may read (mkdtemp makes them 0700). */
const folder = (path: string) => {
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o755);
  return path;
};
const base = folder(realpathSync(mkdtempSync(join(inject('tmpRoot'), 'mounts-'))));
const roots = folder(join(base, 'roots'));
const outside = folder(join(base, 'outside'));
const cache = folder(join(roots, 'npm-cache'));
writeFileSync(join(outside, 'secret'), 'not for the sandbox\n');
writeFileSync(join(cache, 'index.json'), '{"packages":3}\n');
writeFileSync(join(roots, 'npmrc'), 'offline=true\n');
symlinkSync(outside, join(roots, 'leads-out'));
symlinkSync(cache, join(roots, 'cache-link'));
folder(join(roots, '.envrun'));
const tenancy = loadTenancy({ ENVRUN_WORKSPACE_ROOTS: roots }, join(roots, '.envrun'));

const config = (mounts: unknown) => ({ provider: 'bubblewrap', mounts });
const offline = createBubblewrapProvider({ rootDir: join(base, 'no-bwrap'), bwrapPath: null });

describe('bubblewrap mounts: config', () => {
  it('keeps valid mounts as given', async () => {
    const mounts = [
      { source: cache, target: '/cache/npm' },
      { source: join(roots, 'npmrc'), target: '/opt/npmrc' },
    ];
    expect((await offline.validateConfig(config(mounts))).config).toMatchObject({ mounts });
    expect((await offline.validateConfig({ provider: 'bubblewrap' })).config).not.toHaveProperty('mounts');
  });

  it.each([
    ['/', /config\.mounts\[1\]\.target: must not be \//],
    ['/workspace', /config\.mounts\[1\]\.target: must not be \/workspace/],
    ['/workspace/node_modules', /config\.mounts\[1\]\.target: must not be \/workspace/],
    ['/usr/x', /config\.mounts\[1\]\.target: must not be \/usr/],
    ['/usr', /config\.mounts\[1\]\.target: must not be \/usr/],
    ['/proc', /config\.mounts\[1\]\.target: must not be \/proc/],
    ['/proc/1/root', /config\.mounts\[1\]\.target: must not be \/proc/],
    ['/dev/shm', /config\.mounts\[1\]\.target: must not be \/dev/],
    ['/tmp/cache', /config\.mounts\[1\]\.target: must not be \/tmp/],
    ['/etc/passwd', /config\.mounts\[1\]\.target: must not be \/etc/],
    ['/opt/../usr', /config\.mounts\[1\]\.target: must not contain "\.\." segments/],
    ['/opt/./x', /config\.mounts\[1\]\.target: must be a normalized path/],
    ['/opt//x', /config\.mounts\[1\]\.target: must be a normalized path/],
    ['/opt/x/', /config\.mounts\[1\]\.target: must be a normalized path/],
    ['cache', /config\.mounts\[1\]\.target: must be an absolute path/],
  ])('refuses the target %s, naming the field', async (target, message) => {
    const mounts = [
      { source: cache, target: '/cache' },
      { source: cache, target },
    ];
    await expect(offline.validateConfig(config(mounts))).rejects.toThrow(message);
  });

  it('refuses a relative source, overlapping targets, unknown keys and more than 16 mounts', async () => {
    await expect(offline.validateConfig(config([{ source: 'cache', target: '/cache' }]))).rejects.toThrow(
      /config\.mounts\[0\]\.source: must be an absolute path/,
    );
    const overlapping = [
      { source: cache, target: '/cache' },
      { source: cache, target: '/cache/npm' },
    ];
    await expect(offline.validateConfig(config(overlapping))).rejects.toThrow(
      /config\.mounts\[1\]\.target: overlaps mounts\[0\]\.target/,
    );
    await expect(offline.validateConfig(config([{ source: cache, target: '/cache', writable: true }]))).rejects.toThrow(
      /config\.mounts\[0\]/,
    );
    const many = Array.from({ length: 17 }, (_, i) => ({ source: cache, target: `/cache/${i}` }));
    await expect(offline.validateConfig(config(many))).rejects.toThrow(/config\.mounts: /);
  });

  it('binds each mount read-only after the workspace, before the root is made read-only', () => {
    const args = sandboxArgs({
      features: { disableUserns: true, tmpfsSize: true },
      network: 'none',
      limits: SandboxLimits.parse(undefined),
      workspace: '/data/run-1/workspace',
      cwd: '/workspace',
      env: {},
      command: 'npm',
      args: ['ci', '--offline'],
      prlimit: '/usr/bin/prlimit',
      etcFiles: {},
      seccomp: null,
      fds: new SandboxFds(),
      readOnly: ['/usr'],
      mounts: [{ source: '/srv/npm-cache', target: '/cache/npm' }],
    });
    const at = args.findIndex((v, i) => v === '--ro-bind' && args[i + 1] === '/srv/npm-cache');
    expect(args.slice(at, at + 3)).toEqual(['--ro-bind', '/srv/npm-cache', '/cache/npm']);
    expect(at).toBeGreaterThan(args.indexOf('/data/run-1/workspace'));
    const rootReadOnly = args.findIndex((v, i) => v === '--remount-ro' && args[i + 1] === '/');
    expect(at).toBeLessThan(rootReadOnly);
    expect(args.filter((v) => v === '--bind')).toHaveLength(1); // the workspace only: never writable
  });
});

describe('bubblewrap mounts: sources inside the workspace roots', () => {
  it('returns the real paths of sources inside the roots (a link inside leading inside is followed)', () => {
    expect(
      checkMountSources(tenancy, 'co-a', [
        { source: cache, target: '/cache' },
        { source: join(roots, 'cache-link'), target: '/cache2' },
      ]),
    ).toEqual([cache, cache]);
  });

  it('refuses a source outside the roots, naming the field', () => {
    expect(() =>
      checkMountSources(tenancy, 'co-a', [
        { source: cache, target: '/cache' },
        { source: outside, target: '/o' },
      ]),
    ).toThrow(/^config\.mounts\[1\]\.source: .* is outside the workspace roots of company co-a$/);
    expect(() => checkMountSources(tenancy, 'co-a', [{ source: '/etc', target: '/o' }])).toThrow(TenancyError);
  });

  it('refuses a link inside the roots that leads outside them', () => {
    expect(() => checkMountSources(tenancy, 'co-a', [{ source: join(roots, 'leads-out'), target: '/o' }])).toThrow(
      /^config\.mounts\[0\]\.source: .*leads-out is outside the workspace roots/,
    );
    expect(() =>
      checkMountSources(tenancy, 'co-a', [{ source: join(roots, 'leads-out', 'secret'), target: '/o' }]),
    ).toThrow(/config\.mounts\[0\]\.source/);
  });

  it("refuses the worker's data folder, a missing source, another company's folder and a malformed list", () => {
    expect(() => checkMountSources(tenancy, 'co-a', [{ source: join(roots, '.envrun'), target: '/d' }])).toThrow(
      /config\.mounts\[0\]\.source: .* is outside the workspace roots/,
    );
    expect(() => checkMountSources(tenancy, 'co-a', [{ source: join(roots, 'nothing'), target: '/d' }])).toThrow(
      /config\.mounts\[0\]\.source: .*nothing does not exist/,
    );
    const perCompany = loadTenancy({ ENVRUN_WORKSPACE_ROOTS: join(base, 'companies', '{company}') });
    const ofB = folder(join(base, 'companies', 'co-b', 'cache'));
    folder(join(base, 'companies', 'co-a'));
    expect(checkMountSources(perCompany, 'co-b', [{ source: ofB, target: '/c' }])).toEqual([ofB]);
    expect(() => checkMountSources(perCompany, 'co-a', [{ source: ofB, target: '/c' }])).toThrow(
      /config\.mounts\[0\]\.source: .* is outside the workspace roots of company co-a/,
    );
    expect(() => checkMountSources(tenancy, 'co-a', { source: cache })).toThrow(/config\.mounts: must be a list/);
    expect(() => checkMountSources(tenancy, 'co-a', [{ target: '/c' }])).toThrow(/config\.mounts\[0\]\.source/);
  });
});

describe.skipIf(!hasBwrap())('bubblewrap mounts: in a real sandbox', () => {
  /** Runs `script` in a fresh sandbox with these mounts; the lease is released after. */
  async function inSandbox(mounts: unknown, script: string) {
    const provider = await sandboxProvider();
    const { config: valid } = await provider.validateConfig(config(mounts));
    const ctx = callContext(`run-mounts-${randomUUID().slice(0, 8)}`);
    const lease = await provider.acquireLease(valid, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
    try {
      return await provider.execute(
        valid,
        { ...ctx, lease },
        { command: 'bash', args: ['-c', script], env: {}, timeoutMs: 30_000 },
      );
    } finally {
      await provider.releaseLease(valid, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null });
    }
  }

  it('reads a mounted folder and file at their targets, and cannot write, remove or remount them', async () => {
    // Writable by anyone but for the mount: every write below fails because the mount is read-only.
    const shared = join(roots, `shared-${randomUUID().slice(0, 8)}`);
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    writeFileSync(join(shared, 'index.json'), '{"packages":3}\n', { mode: 0o666 });
    writeFileSync(join(shared, 'npmrc'), 'offline=true\n', { mode: 0o666 });
    chmodSync(join(shared, 'index.json'), 0o666);
    chmodSync(join(shared, 'npmrc'), 0o666);
    const res = await inSandbox(
      [
        { source: shared, target: '/cache/npm' },
        { source: join(shared, 'npmrc'), target: '/opt/npmrc' },
      ],
      [
        'cat /cache/npm/index.json /opt/npmrc',
        'touch /cache/npm/new 2>&1',
        'echo x >> /cache/npm/index.json 2>&1 || echo APPEND-FAILED',
        'rm -f /cache/npm/index.json 2>&1',
        'mkdir /cache/npm/d 2>&1',
        'echo x > /opt/npmrc 2>&1 || echo WRITE-FAILED',
        'mount -o remount,rw /cache/npm 2>/dev/null && echo REMOUNTED',
        'true',
      ].join('\n'),
    );
    expect(res.exitCode).toBe(0);
    expect(res.stdout).toContain('{"packages":3}\noffline=true\n');
    // touch, rm and mkdir on stdout; the shell's own redirections (>>, >) on stderr.
    expect(res.stdout.match(/Read-only file system/g)).toHaveLength(3);
    expect(res.stderr.match(/Read-only file system/g)).toHaveLength(2);
    expect(res.stdout).toContain('APPEND-FAILED');
    expect(res.stdout).toContain('WRITE-FAILED');
    expect(res.stdout).not.toContain('REMOUNTED');
    expect(readdirSync(shared).sort()).toEqual(['index.json', 'npmrc']);
    expect(readFileSync(join(shared, 'index.json'), 'utf8')).toBe('{"packages":3}\n');
    expect(readFileSync(join(shared, 'npmrc'), 'utf8')).toBe('offline=true\n');
  });

  it('binds what a link leads to (bwrap follows it): why the source is checked by its real path', async () => {
    // The provider alone, with no roots check: the link's target is what the sandbox reads.
    const res = await inSandbox([{ source: join(roots, 'leads-out'), target: '/cache' }], 'cat /cache/secret');
    expect(res.stdout).toBe('not for the sandbox\n');
    // Which is why the check that runs before any sandbox refuses it (see the roots tests above and below).
    expect(() => checkMountSources(tenancy, 'co-a', [{ source: join(roots, 'leads-out'), target: '/cache' }])).toThrow(
      TenancyError,
    );
  });

  it('refuses to run when a source is gone since the config was checked, naming the field', async () => {
    const gone = folder(join(roots, `gone-${randomUUID().slice(0, 8)}`));
    const provider = await sandboxProvider();
    const { config: valid } = await provider.validateConfig(config([{ source: gone, target: '/cache' }]));
    const ctx = callContext('run-mounts-gone');
    const lease = await provider.acquireLease(valid, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
    rmSync(gone, { recursive: true });
    try {
      await expect(
        provider.execute(valid, { ...ctx, lease }, { command: 'true', args: [], env: {}, timeoutMs: 10_000 }),
      ).rejects.toThrow(/config\.mounts\[0\]\.source: .*gone-.* cannot be resolved/);
    } finally {
      await provider.releaseLease(valid, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null });
    }
  });

  it.skipIf(!isRoot())('names the folder the sandbox uid cannot pass through to a source', async () => {
    const closed = join(roots, `closed-${randomUUID().slice(0, 8)}`);
    mkdirSync(join(closed, 'cache'), { recursive: true });
    chmodSync(closed, 0o700);
    await expect(inSandbox([{ source: join(closed, 'cache'), target: '/cache' }], 'true')).rejects.toThrow(
      /config\.mounts\[0\]\.source: the sandbox uid \d+ cannot pass through .*closed-/,
    );
  });
});

describe('bubblewrap mounts: checked when a run acquires its lease and when an environment is written', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let store: Store;
  const providers = createProviders({ dataDir: join(base, 'data') });
  const drivers = createDrivers(providers);
  beforeAll(async () => {
    db = await freshDatabase();
    store = new Store(db.db);
  });
  afterAll(async () => {
    await db?.close();
  });

  const acquire = (companyId: string, environmentId: string): Promise<EnvironmentLease> => {
    const request = RunRequestSchema.parse({
      companyId,
      heartbeatRunId: 'run-mounts',
      environmentId,
      workspace: { baseCwd: cache, cwd: cache },
    });
    return new MockActivityEnvironment({
      attempt: 1,
      workflowExecution: { workflowId: 'wf-m', runId: 'r' },
    } as never).run(createActivities({ store, drivers, tenancy }).acquireLease, {
      request,
      environmentId,
    }) as Promise<EnvironmentLease>;
  };

  it('a run on an environment whose mount leads outside the roots fails before any lease is made', async () => {
    const companyId = uniqueId('co');
    // Written directly: as a row written before the roots changed, or by something that skipped the admin API.
    const environment = await store.createEnvironment({
      companyId,
      name: 'bw',
      driver: 'sandbox',
      config: config([{ source: join(roots, 'leads-out'), target: '/cache' }]),
    });
    await expect(acquire(companyId, environment.id)).rejects.toMatchObject({
      type: 'unsupported_environment',
      message: expect.stringMatching(/config\.mounts\[0\]\.source: .*leads-out is outside the workspace roots/),
    });
    expect(await store.listLeases(companyId)).toEqual([]);
  });

  it.skipIf(!hasBwrap())('a run on an environment whose mounts are inside the roots gets its lease', async () => {
    const companyId = uniqueId('co');
    const environment = await store.createEnvironment({
      companyId,
      name: 'bw',
      driver: 'sandbox',
      config: config([{ source: join(roots, 'cache-link'), target: '/cache' }]),
    });
    const lease = await acquire(companyId, environment.id);
    expect(lease.providerLeaseId).toMatch(/^bwrap:\/\//);
    await drivers.sandbox!.release({ attempt: 1, idempotencyKey: 'release-m' }, { environment, lease, keep: false });
  });

  it('the admin API refuses a mount outside the roots when an environment is created or updated', async () => {
    // Every refusal comes before anything is written or started: the admin needs no Temporal client here.
    const admin = new EnvRunAdmin({ runs: null as never, store, drivers, tenancy });
    const companyId = uniqueId('co');
    const create = (mounts: unknown) =>
      admin.createEnvironment({ companyId, name: 'bw', driver: 'sandbox', config: config(mounts) });
    await expect(create([{ source: outside, target: '/cache' }])).rejects.toThrow(InvalidInputError);
    await expect(create([{ source: join(roots, 'leads-out'), target: '/cache' }])).rejects.toThrow(
      /config\.mounts\[0\]\.source: .* is outside the workspace roots/,
    );
    await expect(create([{ source: cache, target: '/workspace/cache' }])).rejects.toThrow(
      /config\.mounts\[0\]\.target: must not be \/workspace/,
    );
    expect(
      await admin.validateEnvironmentConfig('sandbox', config([{ source: cache, target: '/cache' }])),
    ).toMatchObject({ mounts: [{ source: cache, target: '/cache' }] });
    const environment = await store.createEnvironment({
      companyId,
      name: 'bw',
      driver: 'sandbox',
      config: config([{ source: cache, target: '/cache' }]),
    });
    await expect(
      admin.updateEnvironment(companyId, environment.id, { config: config([{ source: outside, target: '/cache' }]) }),
    ).rejects.toThrow(/config\.mounts\[0\]\.source: .* is outside the workspace roots/);
  });
});
