// A run on a bubblewrap environment with `network: "allowlist"`, through the worker, Temporal and
// PostgreSQL: the provision command reaches what the provision phase allows, the run's commands are refused
// what only provisioning may reach (and have no way around the proxy), and the egress audit, the activity log
// and `listEgress` say so, per phase.
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIVITY_ACTIONS } from '../../contracts/index.js';
import { bwrapUnavailable } from '../../drivers/providers/bubblewrap/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';

const skip = process.getuid?.() !== 0 || bwrapUnavailable() !== null;

let h: Harness;
let server: Server;
let port = 0;
const hits: string[] = [];
beforeAll(async () => {
  if (skip) return;
  h = await createHarness();
  server = createServer((req, res) => {
    hits.push(req.url ?? '');
    res.end('hello from the registry\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  server?.close();
  await h?.close();
});

const until = async <T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> => {
  for (const t = Date.now(); ;) {
    const v = await read();
    if (ok(v) || Date.now() - t > ms) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
};

describe.skipIf(skip)('a run with network "allowlist"', () => {
  it('provisions through the proxy, is refused in its run phase, and the audit says which phase did what', async () => {
    const companyId = uniqueId('co');
    const target = `127.0.0.1:${port}`; // a loopback address: allowed only because it is listed literally
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'allowlist',
      driver: 'sandbox',
      config: {
        provider: 'bubblewrap',
        network: 'allowlist',
        discardChanges: true,
        egress: { provision: { allow: [target] }, run: { allow: [] } },
      },
    });
    const req = runRequest({
      companyId,
      cwd: tempWorkspace(),
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: `curl -fsS http://${target}/provision > fetched.txt` },
    });
    await h.client.startRunAndWaitReady(req);
    expect(hits).toContain('/provision');
    const exec = (command: string, args: string[]) => h.admin.exec(companyId, req.heartbeatRunId, { command, args });
    expect((await exec('cat', ['fetched.txt'])).stdout).toBe('hello from the registry\n');

    // The run phase allows nothing: the proxy answers 403, and going around it finds no network.
    const refused = await exec('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://${target}/run`]);
    expect(refused.stdout).toBe('403');
    const around = await exec('curl', ['-sS', '--noproxy', '*', '--max-time', '5', `http://${target}/around`]);
    expect(around.exitCode).not.toBe(0);
    expect(hits).not.toContain('/run');
    expect(hits).not.toContain('/around');
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });

    const rows = await until(
      () => h.admin.listEgress(companyId, req.heartbeatRunId),
      (r) => r.some((x) => x.phase === 'run'),
    );
    expect(rows).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ phase: 'provision', host: '127.0.0.1', port, verdict: 'allowed', connections: 1 }),
        expect.objectContaining({ phase: 'run', host: '127.0.0.1', port, verdict: 'denied', reason: 'ip_not_listed' }),
      ]),
    );
    const allowed = rows.find((r) => r.verdict === 'allowed')!;
    expect(allowed.bytesDown).toBeGreaterThan('hello from the registry\n'.length);
    const denials = await h.store.listActivity(companyId, {
      runId: req.heartbeatRunId,
      action: ACTIVITY_ACTIONS.egressDenied,
    });
    expect(denials).toHaveLength(1);
    expect(denials[0]!.details).toMatchObject({ host: '127.0.0.1', port, phase: 'run', reason: 'ip_not_listed' });
  });

  it('a provider that cannot enforce it refuses the environment: unsupported_environment', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'fake-allowlist',
      driver: 'sandbox',
      config: { provider: 'fake', network: 'allowlist', egress: { allow: ['registry.npmjs.org:443'] } },
    });
    const req = runRequest({ companyId, cwd: tempWorkspace(), environmentId: env.id });
    await expect(h.client.startRunAndWaitReady(req)).rejects.toMatchObject({ code: 'unsupported_environment' });
  });
});
