// The `envrun` binary as a user runs it, against the real server, a real worker and PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { tempWorkspace } from '../support/runs.js';

let h: Harness;

function envrun(args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> {
  return runCli(h, args, extraEnv);
}

beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

describe('bad input: exit 2, a message naming the field, nothing started or written', () => {
  const companyId = uniqueId('co');
  it.each([
    [['env', 'create', '--company', companyId, '--name', 'x', '--driver', 'docker'], /--driver/],
    [
      ['env', 'create', '--company', companyId, '--name', 'x', '--driver', 'sandbox', '--config', '{"provider":'],
      /--config: not valid JSON/,
    ],
    [
      ['env', 'create', '--company', companyId, '--name', 'x', '--driver', 'sandbox', '--config', '[1]'],
      /--config: must be a JSON object/,
    ],
    [
      ['env', 'create', '--company', companyId, '--name', 'x', '--driver', 'ssh', '--config', '{"host":"h"}'],
      /config\.username/,
    ],
    [
      [
        'env',
        'create',
        '--company',
        companyId,
        '--name',
        'x',
        '--driver',
        'ssh',
        '--config',
        '{"host":"-oProxyCommand=sh","username":"u","remoteWorkspacePath":"/w","privateKeySecretRef":"env:K"}',
      ],
      /config\.host/,
    ],
    [['env', 'create', '--company', companyId, '--driver', 'local'], /--name/],
    [['env', 'create', '--company', 'bad company', '--name', 'x', '--driver', 'local'], /--company/],
    [['run', 'start', '--company', companyId, '--run', 'r1'], /--cwd/],
    [['run', 'start', '--company', companyId, '--run', 'r/../1', '--cwd', '/tmp'], /--run/],
    [
      ['run', 'start', '--company', companyId, '--run', 'r2', '--cwd', '/tmp', '--env', 'nope'],
      /request\.environmentId/,
    ],
    [
      [
        'run',
        'start',
        '--company',
        companyId,
        '--run',
        'r3',
        '--cwd',
        '/tmp',
        '--worktree',
        '/tmp/wt',
        '--branch',
        'a b',
      ],
      /request\.workspace\.branchName/,
    ],
    [['run', 'complete', '--company', companyId, '--run', 'r1', '--reason', 'x'], /--reason: only with --failed/],
    [['run', 'complete', '--company', companyId, '--run', 'r1', '--disposition', 'shred'], /--disposition/],
    [['run', 'cancel', '--company', companyId, '--run', 'r1', '--disposition', ''], /--disposition/],
    [['run', 'exec', '--company', companyId, '--run', 'r1', '--env-var', 'NOEQUALS', '--', 'true'], /--env-var/],
    [['lease', 'list', '--company', companyId, '--status', 'weird'], /--status/],
    [['env', 'update', 'not-a-uuid', '--company', companyId, '--config', '{}'], /id: /],
    [['env', 'update', '00000000-0000-4000-8000-000000000000', '--config', '{}'], /required option '--company <id>'/],
    [['env', 'archive', '00000000-0000-4000-8000-000000000000'], /required option '--company <id>'/],
    [['env', 'probe', '00000000-0000-4000-8000-000000000000', '--company', 'a b'], /--company/],
  ])('%j', async (args, message) => {
    const res = await envrun(args as string[]);
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toMatch(message as RegExp);
    expect(await h.store.listEnvironments(companyId)).toEqual([]);
    expect(await h.client.getRun(companyId, 'r2')).toBeNull();
    expect(await h.client.getRun(companyId, 'r3')).toBeNull();
  });

  it('a bad configuration value is named too', async () => {
    const res = await envrun(['env', 'list', '--company', 'c'], { TEMPORAL_ADDRESS: 'nohostport' });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('TEMPORAL_ADDRESS: must be host:port');
  });
});

describe('a run through the CLI', () => {
  it('env create/list/update/archive, run start --wait, status, exec, complete, lease list', async () => {
    const companyId = uniqueId('co');
    const created = await envrun([
      'env',
      'create',
      '--company',
      companyId,
      '--name',
      'sbx',
      '--driver',
      'sandbox',
      '--config',
      '{"provider":"fake"}',
      '--json',
    ]);
    expect(created.code, created.stderr).toBe(0);
    const env = JSON.parse(created.stdout) as { id: string; config: Record<string, unknown> };
    // The provider's normalized config is what is stored.
    expect(env.config).toEqual({ provider: 'fake', reuseLease: false, faults: {} });
    const list = await envrun(['env', 'list', '--company', companyId, '--json']);
    expect(JSON.parse(list.stdout).map((e: { id: string }) => e.id)).toEqual([env.id]);
    const updated = await envrun([
      'env',
      'update',
      env.id,
      '--company',
      companyId,
      '--config',
      '{"provider":"fake","timeoutMs":5000}',
      '--json',
    ]);
    expect(JSON.parse(updated.stdout).config).toMatchObject({ timeoutMs: 5000 });

    const cwd = tempWorkspace();
    const start = await envrun([
      'run',
      'start',
      '--company',
      companyId,
      '--run',
      'r1',
      '--env',
      env.id,
      '--cwd',
      cwd,
      '--provision',
      'echo hi > provisioned',
      '--wait',
      '--json',
    ]);
    expect(start.code, start.stderr).toBe(0);
    expect(JSON.parse(start.stdout).executionTarget).toMatchObject({
      kind: 'remote',
      transport: 'sandbox',
      timeoutMs: 5000,
    });
    const status = await envrun(['run', 'status', '--company', companyId, '--run', 'r1']);
    expect(status.stdout).toMatch(/^phase\tready$/m);

    const exec = await envrun([
      'run',
      'exec',
      '--company',
      companyId,
      '--run',
      'r1',
      '--env-var',
      'GREETING=hello',
      '--',
      'sh',
      '-c',
      'cat provisioned; echo $GREETING; echo oops >&2; exit 3',
    ]);
    expect(exec.code).toBe(3);
    expect(exec.stdout).toBe('hi\nhello\n');
    expect(exec.stderr).toBe('oops\n');

    const leases = await envrun(['lease', 'list', '--company', companyId, '--status', 'active', '--json']);
    expect(JSON.parse(leases.stdout)).toHaveLength(1);
    const done = await envrun([
      'run',
      'complete',
      '--company',
      companyId,
      '--run',
      'r1',
      '--failed',
      '--reason',
      'tests red',
    ]);
    expect(done.code, done.stderr).toBe(0);
    const after = await envrun(['lease', 'list', '--company', companyId, '--json']);
    expect(JSON.parse(after.stdout)[0]).toMatchObject({ status: 'failed', failureReason: 'tests red' });

    const archived = await envrun(['env', 'archive', env.id, '--company', companyId]);
    expect(archived.stdout.trim()).toBe(`${env.id}\tarchived`);
    const refused = await envrun([
      'run',
      'start',
      '--company',
      companyId,
      '--run',
      'r2',
      '--env',
      env.id,
      '--cwd',
      cwd,
      '--wait',
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('environment_inactive');
  });

  it("env probe prints the provider's diagnostics; lease release frees a retained lease", async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'sbx',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 1 } } },
    });
    const probe = await envrun(['env', 'probe', env.id, '--company', companyId]);
    expect(probe.code, probe.stderr).toBe(0);
    expect(probe.stdout).toBe(`ok\n  info     root ${h.fakeRoot} is writable\n  warning  faults configured: realize\n`);
    const cwd = tempWorkspace();
    expect(
      (
        await envrun([
          'run',
          'start',
          '--company',
          companyId,
          '--run',
          'keep',
          '--env',
          env.id,
          '--cwd',
          cwd,
          '--lease-policy',
          'retain_on_failure',
          '--wait',
        ])
      ).code,
    ).toBe(0);
    expect(
      (await envrun(['run', 'complete', '--company', companyId, '--run', 'keep', '--failed', '--reason', 'flaky']))
        .code,
    ).toBe(0);
    const [lease] = await h.store.listRunLeases(companyId, 'keep');
    expect(lease!.status).toBe('retained');
    const released = await envrun(['lease', 'release', lease!.id, '--company', companyId]);
    expect(released.code, released.stderr).toBe(0);
    expect(released.stdout.trim()).toBe(`${lease!.id}\treleased\tcleanup=success`);
    const again = await envrun(['lease', 'release', lease!.id, '--company', companyId]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('is released, not retained');
  });

  it('ops commands: run list, bulk run retry, run renew, stats, reaper run-once', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'flaky',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always' } } },
    });
    const cwd = tempWorkspace();
    expect(
      (
        await envrun([
          'run',
          'start',
          '--company',
          companyId,
          '--run',
          'stuck',
          '--env',
          env.id,
          '--cwd',
          cwd,
          '--await-retry-ms',
          '600000',
        ])
      ).code,
    ).toBe(0);
    let listed: Array<{ heartbeatRunId: string; errorCode: string }> = [];
    for (let i = 0; i < 60 && listed.length === 0; i++) {
      const list = await envrun(['run', 'list', '--company', companyId, '--phase', 'awaiting_retry', '--json']);
      listed = JSON.parse(list.stdout);
      if (listed.length === 0) await new Promise((r) => setTimeout(r, 250));
    }
    expect(listed).toMatchObject([{ heartbeatRunId: 'stuck', errorCode: 'workspace_realization_failed' }]);
    expect((await envrun(['run', 'list', '--phase', 'sideways'])).code).toBe(2);
    await h.admin.updateEnvironment(companyId, env.id, { config: { provider: 'fake' } });
    const retry = await envrun(['run', 'retry', '--phase', 'awaiting_retry', '--environment', env.id]);
    expect(retry.code, retry.stderr).toBe(0);
    expect(retry.stdout.trim()).toBe(`retried\tenvrun/${companyId}/stuck`);
    await h.client.waitReady(companyId, 'stuck');
    const renew = await envrun(['run', 'renew', '--company', companyId, '--run', 'stuck', '--json']);
    expect(Date.parse(JSON.parse(renew.stdout).expiresAt)).toBeGreaterThan(Date.now());
    await h.client.completeRun(companyId, 'stuck', { status: 'succeeded' });
    const stats = await envrun(['stats', '--since', '1h', '--company', companyId, '--json']);
    expect(JSON.parse(stats.stdout)).toEqual([
      expect.objectContaining({ driver: 'sandbox', provider: 'fake', runs: 1 }),
    ]);
    expect((await envrun(['stats', '--since', 'forever'])).code).toBe(2);
    const reaped = await envrun(['reaper', 'run-once', '--json']);
    expect(reaped.code, reaped.stderr).toBe(0);
    expect(Array.isArray(JSON.parse(reaped.stdout))).toBe(true);
  });

  it('run complete --disposition destroy ends a reused sandbox; keep_running keeps it for the next run', async () => {
    const companyId = uniqueId('co');
    const created = await envrun([
      'env',
      'create',
      '--company',
      companyId,
      '--name',
      'reused',
      '--driver',
      'sandbox',
      '--config',
      '{"provider":"fake","reuseLease":true}',
      '--json',
    ]);
    expect(created.code, created.stderr).toBe(0);
    const envId = (JSON.parse(created.stdout) as { id: string }).id;
    const cwd = tempWorkspace();
    const start = (run: string) =>
      envrun(['run', 'start', '--company', companyId, '--run', run, '--env', envId, '--cwd', cwd, '--wait']);
    expect((await start('r1')).code).toBe(0);
    const kept = await envrun([
      'run',
      'complete',
      '--company',
      companyId,
      '--run',
      'r1',
      '--disposition',
      'keep_running',
    ]);
    expect(kept.code, kept.stderr).toBe(0);
    const [first] = await h.store.listRunLeases(companyId, 'r1');
    expect(first!.metadata).toMatchObject({ kept: true });
    expect((await start('r2')).code).toBe(0);
    const [second] = await h.store.listRunLeases(companyId, 'r2');
    expect(second!.providerLeaseId).toBe(first!.providerLeaseId); // the same sandbox, reused
    const done = await envrun([
      'run',
      'complete',
      '--company',
      companyId,
      '--run',
      'r2',
      '--disposition',
      'destroy',
      '--cancel-active-work',
    ]);
    expect(done.code, done.stderr).toBe(0);
    const [after] = await h.store.listRunLeases(companyId, 'r2');
    expect(after!.metadata).toMatchObject({ termination: { state: 'destroyed' } });
    expect(after!.metadata?.kept).not.toBe(true);
  });

  it('run cancel releases the lease; a run that already ended is refused, saying how it ended; status of an unknown run exits 1', async () => {
    const companyId = uniqueId('co');
    const cwd = tempWorkspace();
    expect((await envrun(['run', 'start', '--company', companyId, '--run', 'r1', '--cwd', cwd, '--wait'])).code).toBe(
      0,
    );
    const cancel = await envrun(['run', 'cancel', '--company', companyId, '--run', 'r1']);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout.trim()).toBe('cancelled');
    expect((await h.store.listRunLeases(companyId, 'r1'))[0]!.status).toBe('released');
    const again = await envrun(['run', 'cancel', '--company', companyId, '--run', 'r1', '--json']);
    expect(again.code, again.stderr).toBe(1);
    expect(JSON.parse(again.stdout)).toMatchObject({ error: { code: 'run_ended', outcome: 'cancelled' }, exitCode: 1 });
    expect(again.stderr.trim()).toBe(
      `envrun: run r1 of company ${companyId} already ended, nothing to cancel: cancelled`,
    );

    expect((await envrun(['run', 'start', '--company', companyId, '--run', 'r2', '--cwd', cwd, '--wait'])).code).toBe(
      0,
    );
    expect((await envrun(['run', 'complete', '--company', companyId, '--run', 'r2'])).code).toBe(0);
    const leasesBefore = await h.store.listRunLeases(companyId, 'r2');
    const late = await envrun(['run', 'cancel', '--company', companyId, '--run', 'r2']);
    expect(late.code, late.stderr).toBe(1);
    expect(late.stderr.trim()).toBe(
      `envrun: run r2 of company ${companyId} already ended, nothing to cancel: completed, status succeeded`,
    );
    expect(await h.store.listRunLeases(companyId, 'r2')).toEqual(leasesBefore);
    expect((await h.client.getRun(companyId, 'r2'))?.phase).toBe('released');
    const unknown = await envrun(['run', 'status', '--company', companyId, '--run', 'nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('not found');
  });
});
