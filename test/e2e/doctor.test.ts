// `envrun doctor` as a deployer runs it: the compiled bin, a real Temporal server and PostgreSQL. It prints
// the effective settings with every secret masked and a line per probe, and exits 1 when a required probe
// fails.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { freePort } from '../../lib/net.js';
import { BIN, type CliResult } from '../support/cli.js';
import { freshDatabase, uniqueId } from '../support/harness.js';

let database: Awaited<ReturnType<typeof freshDatabase>>;

beforeAll(async () => {
  database = await freshDatabase();
});
afterAll(async () => {
  await database?.close();
});

function doctor(args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, 'doctor', ...args],
      {
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/tmp',
          ENVRUN_DATA_DIR: join(inject('tmpRoot'), uniqueId('doctor')),
          ...env,
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

// Secrets a deployer sets: none of them may appear in the output.
const SECRETS = {
  TEMPORAL_GRPC_META_X_ENVRUN_TOKEN: 'grpc-header-sekrit',
  ENVRUN_SECRET_GRANTS: '{"acme":["env:ACME_DEPLOY_KEY_REF"]}',
};
/** The sandbox probes are host-dependent: with the bubblewrap provider off they may warn, never fail. */
const NO_SANDBOX = { ENVRUN_DRIVERS: 'local,ssh' };

describe('envrun doctor', () => {
  it('prints the settings with secrets masked and every probe; all required probes pass (exit 0)', async () => {
    const password = new URL(database.url).password;
    expect(password.length).toBeGreaterThan(3);
    const r = await doctor([], {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      DATABASE_URL: database.url,
      ENVRUN_TASK_QUEUE: 'doctor-queue',
      ENVRUN_MAX_WORKSPACE_BYTE: '1', // a typo
      ...SECRETS,
      ...NO_SANDBOX,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const secret of [password, 'grpc-header-sekrit', 'ACME_DEPLOY_KEY_REF']) {
      expect(r.stdout).not.toContain(secret);
    }
    const masked = new URL(database.url);
    masked.password = '***';
    expect(r.stdout).toMatch(new RegExp(`^ {2}\\* DATABASE_URL +${escape(masked.toString())}$`, 'm'));
    expect(r.stdout).toMatch(/^ {2}\* ENVRUN_SECRET_GRANTS +\*\*\* \(set\)$/m);
    expect(r.stdout).toMatch(/^ {2}\* TEMPORAL_GRPC_META_X_ENVRUN_TOKEN +\*\*\* \(set\)$/m);
    expect(r.stdout).toMatch(/^ {2}\* ENVRUN_TASK_QUEUE +doctor-queue$/m);
    expect(r.stdout).toMatch(/^ {4}ENVRUN_SHUTDOWN_GRACE_MS +10000$/m);
    expect(r.stdout).toContain('not read by envrun (a typo?): ENVRUN_MAX_WORKSPACE_BYTE');
    expect(r.stdout).toMatch(/^ {2}ok +settings +\d+ variables read, none refused$/m);
    for (const name of ['bwrap', 'user namespaces', 'seccomp', 'slirp4netns', 'prlimit']) {
      expect(r.stdout).toMatch(new RegExp(`^  (ok|warn) +${name}  `, 'm'));
    }
    expect(r.stdout).toMatch(
      new RegExp(`^ {2}ok +temporal +${escape(inject('temporalAddress'))}, namespace default: reachable \\(`, 'm'),
    );
    expect(r.stdout).toMatch(/^ {2}ok +store +postgres:\/\/[^ ]*:\*\*\*@[^ ]+: PostgreSQL \d+[^,]*, schema in place/m);
    expect(r.stdout).toMatch(/^ok: every required probe passed$/m);
  });

  it('--json: unreachable Temporal and a bad value fail their probes, exit 1, the secret still masked', async () => {
    const closed = await freePort();
    const r = await doctor(['--json', '--timeout', '1s'], {
      TEMPORAL_ADDRESS: `127.0.0.1:${closed}`,
      DATABASE_URL: database.url,
      ENVRUN_SANDBOX_UID: '0',
      ...NO_SANDBOX,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).not.toContain(new URL(database.url).password);
    const report = JSON.parse(r.stdout) as {
      ok: boolean;
      settings: { name: string; value: string; error?: string }[];
      probes: { name: string; status: string; detail: string }[];
    };
    expect(report.ok).toBe(false);
    const probe = (name: string) => report.probes.find((p) => p.name === name);
    expect(probe('settings')).toMatchObject({ status: 'fail' });
    expect(probe('settings')?.detail).toContain('ENVRUN_SANDBOX_UID: must be a uid/gid from 1 to 4294967294 (never 0)');
    expect(report.settings.find((s) => s.name === 'ENVRUN_SANDBOX_UID')?.error).toContain('never 0');
    expect(report.settings.find((s) => s.name === 'DATABASE_URL')?.value).toContain(':***@');
    expect(['ok', 'warn']).toContain(probe('bwrap')?.status);
    // The settings are refused, so Temporal and the store are not tried with them.
    expect(probe('temporal')).toMatchObject({ status: 'fail', detail: 'not checked: settings refused' });
  });

  it('a Temporal server that does not answer fails the temporal probe within the timeout', async () => {
    const closed = await freePort();
    const started = Date.now();
    const r = await doctor(['--timeout', '1s'], {
      TEMPORAL_ADDRESS: `127.0.0.1:${closed}`,
      DATABASE_URL: database.url,
      ...NO_SANDBOX,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^ {2}fail +temporal +127\\.0\\.0\\.1:${closed}, namespace default: `, 'm'));
    expect(r.stdout).toMatch(/^ {2}ok +store /m);
    expect(r.stdout).toMatch(/^FAILED: a required probe failed/m);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('bad --timeout: exit 2 naming the option', async () => {
    const r = await doctor(['--timeout', 'soon'], NO_SANDBOX);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--timeout');
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
