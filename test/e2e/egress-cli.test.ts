// `envrun run egress` through the `envrun` binary, against a harness's server and PostgreSQL: the rows the
// egress proxy's audit wrote for a run, as a table and as JSON; bad input named; a sandbox's host printed
// without its control characters.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EgressAuditRow } from '../../store/store.js';
import { runCli } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';

let h: Harness;
const companyId = uniqueId('co');
const runId = uniqueId('run');
const leaseId = randomUUID();
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
const row = (over: Partial<EgressAuditRow>): EgressAuditRow => ({
  companyId,
  heartbeatRunId: runId,
  leaseId,
  environmentId: 'env-1',
  phase: 'run',
  host: 'registry.npmjs.org',
  port: 443,
  verdict: 'allowed',
  reason: null,
  connections: 2,
  bytesUp: 2048,
  bytesDown: 3 * 1024 * 1024,
  firstAt: at(1),
  lastAt: at(9),
  ...over,
});

beforeAll(async () => {
  h = await createHarness();
  await h.store.recordEgress([
    row({ phase: 'provision', firstAt: at(0), lastAt: at(0) }),
    row({}),
    row({ host: '169.254.169.254', port: 80, verdict: 'denied', reason: 'ip_not_listed', bytesUp: 0, bytesDown: 0 }),
    row({ host: 'evil\u001b[2Jexample', verdict: 'denied', reason: 'bad_request', bytesUp: 0, bytesDown: 0 }),
    row({ heartbeatRunId: uniqueId('other-run'), host: 'elsewhere.example' }),
  ]);
});
afterAll(async () => {
  await h?.close();
});

describe('envrun run egress', () => {
  it("lists the run's rows: host, port, phase, verdict, reason, connections, bytes, first and last", async () => {
    const res = await runCli(h, ['run', 'egress', '--company', companyId, '--run', runId]);
    expect(res.code, res.stderr).toBe(0);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines[0]!.split(/\s+/)).toEqual([
      'HOST',
      'PORT',
      'PHASE',
      'VERDICT',
      'REASON',
      'CONNECTIONS',
      'UP',
      'DOWN',
      'FIRST',
      'LAST',
    ]);
    expect(lines.slice(1).map((l) => l.split(/ {2,}/))).toEqual([
      [
        'registry.npmjs.org',
        '443',
        'provision',
        'allowed',
        '-',
        '2',
        '2.0 KiB',
        '3.0 MiB',
        at(0).toISOString(),
        at(0).toISOString(),
      ],
      [
        '169.254.169.254',
        '80',
        'run',
        'denied',
        'ip_not_listed',
        '2',
        '0 B',
        '0 B',
        at(1).toISOString(),
        at(9).toISOString(),
      ],
      [
        'evil\\x1b[2Jexample',
        '443',
        'run',
        'denied',
        'bad_request',
        '2',
        '0 B',
        '0 B',
        at(1).toISOString(),
        at(9).toISOString(),
      ],
      [
        'registry.npmjs.org',
        '443',
        'run',
        'allowed',
        '-',
        '2',
        '2.0 KiB',
        '3.0 MiB',
        at(1).toISOString(),
        at(9).toISOString(),
      ],
    ]);
    expect(res.stdout).not.toContain('\u001b');
    expect(res.stdout).not.toContain('elsewhere.example');
  });

  it('--json prints the rows as the admin API returns them', async () => {
    const res = await runCli(h, ['run', 'egress', '--company', companyId, '--run', runId, '--json']);
    expect(res.code, res.stderr).toBe(0);
    const listed = JSON.parse(res.stdout) as unknown[];
    expect(listed).toEqual(await h.admin.listEgress(companyId, runId));
    expect(listed).toHaveLength(4);
    expect(listed[1]).toEqual({
      leaseId,
      environmentId: 'env-1',
      phase: 'run',
      host: '169.254.169.254',
      port: 80,
      verdict: 'denied',
      reason: 'ip_not_listed',
      connections: 2,
      bytesUp: 0,
      bytesDown: 0,
      firstAt: at(1).toISOString(),
      lastAt: at(9).toISOString(),
    });
  });

  it('a run with no rows (another company asking, or no allowlist sandbox) prints (none)', async () => {
    const res = await runCli(h, ['run', 'egress', '--company', uniqueId('co'), '--run', runId]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toBe('(none)\n');
  });

  it.each([
    [['--company', 'a b', '--run', 'r'], /--company/],
    [['--company', 'c', '--run', 'r/../x'], /--run/],
    [['--company', 'c'], /required option '--run <id>'/],
    [['--run', 'r'], /required option '--company <id>'/],
  ])('bad input %j: exit 2, naming the option', async (args, message) => {
    const res = await runCli(h, ['run', 'egress', ...args]);
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(res.stdout).toBe('');
  });
});
