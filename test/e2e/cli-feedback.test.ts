// What the CLI tells an operator while it matters: `run start --wait` narrates phases on stderr and stops
// with the error and the retry command when the run awaits an operator; `run status` shows the last error
// and phase times; under --json every error, of any command, is a JSON object with code and message.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { tempWorkspace, until } from '../support/runs.js';

let h: Harness;

function envrun(args: string[]): Promise<CliResult> {
  return runCli(h, args);
}

beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

describe('run start --wait', () => {
  it('prints phases on stderr and the target on stdout', async () => {
    const companyId = uniqueId('co');
    const out = await envrun([
      'run',
      'start',
      '--company',
      companyId,
      '--run',
      'r1',
      '--cwd',
      tempWorkspace(),
      '--provision',
      'sleep 4',
      '--wait',
    ]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/^ready\t\{"kind":"local"/);
    // Polled every 250 ms: a fast run may pass some phases between two looks, never the last one.
    expect(out.stderr, out.stderr).toContain('phase realizing');
    expect(out.stderr.trim().split('\n').at(-1)).toBe('envrun: phase ready');
  });

  it('exits 1 at awaiting_retry with the code, the message and the retry command', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'flaky',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { realize: { fail: 'always', message: 'sandbox unreachable' } } },
    });
    const args = ['run', 'start', '--company', companyId, '--run', 'r2', '--env', env.id, '--cwd', tempWorkspace()];
    const out = await envrun([...args, '--await-retry-ms', '600000', '--wait']);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain('phase awaiting_retry');
    expect(out.stderr).toContain('workspace_realization_failed: sandbox unreachable');
    expect(out.stderr).toContain(`retry with: envrun run retry --company ${companyId} --run r2`);
    // The run itself still waits for the operator, lease held.
    expect((await h.client.getRun(companyId, 'r2'))?.phase).toBe('awaiting_retry');

    const status = await envrun(['run', 'status', '--company', companyId, '--run', 'r2']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('last error\tworkspace_realization_failed: sandbox unreachable');
    expect(status.stdout).toMatch(/requested\t\d{4}-\d\d-\d\dT/);
    expect(status.stdout).toMatch(/leased\t\d{4}-/);
    await h.client.cancelRun(companyId, 'r2');
  });
});

describe('--json errors', () => {
  it.each([
    [['env', 'create', '--company', 'c', '--name', 'x', '--driver', 'docker', '--json'], 2, 'invalid_request'],
    [['run', 'status', '--company', 'nobody', '--run', 'none', '--json'], 1, 'not_found'],
    [['run', 'complete', '--company', 'c', '--run', 'r', '--reason', 'x', '--json'], 2, 'invalid_request'],
    [['reaper', 'install', '--every', 'soon', '--json'], 2, 'invalid_request'],
    [['run', 'start', '--company', 'c', '--json'], 2, 'usage'],
  ])('envrun %j exits %i with a JSON error %s', async (args, exitCode, code) => {
    const out = await envrun(args);
    expect(out.code).toBe(exitCode);
    const printed = JSON.parse(out.stdout) as { error: { code: string; message: string }; exitCode: number };
    expect(printed.error.code).toBe(code);
    expect(printed.error.message.length).toBeGreaterThan(0);
    expect(printed.exitCode).toBe(exitCode);
  });

  it('a failed run is a JSON error with its code and environment', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'broken',
      driver: 'sandbox',
      config: { provider: 'fake', faults: { acquire: { fail: 'always', message: 'no capacity' } } },
    });
    const out = await envrun([
      ...['run', 'start', '--company', companyId, '--run', 'r3', '--env', env.id, '--cwd', tempWorkspace()],
      ...['--wait', '--json'],
    ]);
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout)).toMatchObject({
      error: { code: 'lease_acquire_failed', environmentId: env.id, driver: 'sandbox' },
      exitCode: 1,
    });
    await until('the run to end', async () => (await h.client.getRun(companyId, 'r3'))?.phase === 'failed');
  });
});
