// No secret reaches the worker's logs, the workflow history (`temporal workflow show`), lease metadata or
// the activity log: a worker process holding an SSH key runs real ssh runs, good and bad, and we search.
import { Client, Connection } from '@temporalio/client';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDrivers } from '../../drivers/registry.js';
import { tsxLoaderUrl } from '../../store/embedded.js';
import { Store } from '../../store/store.js';
import { EnvRunAdmin } from '../../client/admin.js';
import { EnvRunClient } from '../../client/runs.js';
import { runWorkflowId } from '../../contracts/index.js';
import { ensureTemporalCli } from '../../scripts/temporal-cli.js';
import { createProviders } from '../../drivers/providers/load.js';
import { freshDatabase, uniqueId } from '../support/harness.js';
import { expectRunError, runRequest } from '../support/runs.js';
import { historyText } from '../support/history.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let db: Awaited<ReturnType<typeof freshDatabase>>;
let sshd: Sshd;
beforeAll(async () => {
  db = await freshDatabase();
  sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
});
afterAll(async () => {
  await sshd?.stop();
  await db?.close();
});

it('an SSH key held by the worker appears in no log, history, lease or activity entry', async () => {
  const taskQueue = uniqueId('secrets');
  const dataDir = join(inject('tmpRoot'), taskQueue);
  const worker = spawn(
    process.execPath,
    ['--import', tsxLoaderUrl(), fileURLToPath(new URL('../../worker/main.ts', import.meta.url))],
    {
      env: {
        PATH: process.env.PATH!,
        HOME: process.env.HOME ?? '/tmp',
        TEMPORAL_ADDRESS: inject('temporalAddress'),
        DATABASE_URL: db.url,
        ENVRUN_TASK_QUEUE: taskQueue,
        ENVRUN_WORKFLOW_BUNDLE: inject('workflowBundle'),
        ENVRUN_LOG_LEVEL: 'DEBUG',
        ENVRUN_REAPER_EVERY: 'off',
        ENVRUN_DATA_DIR: dataDir,
        ENVRUN_SSH_KEY: sshd.privateKey,
      },
    },
  );
  let stdout = '';
  let stderr = '';
  worker.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  worker.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((r) => worker.once('exit', () => r()));
  for (let i = 0; i < 200 && !stdout.includes('worker on '); i++) await new Promise((r) => setTimeout(r, 100));
  expect(stdout, stderr).toContain('worker on ');

  const connection = await Connection.connect({ address: inject('temporalAddress') });
  const client = new EnvRunClient({ client: new Client({ connection }), taskQueue, runDefaults: { awaitRetryMs: 0 } });
  const drivers = createDrivers(createProviders({ dataDir }));
  const admin = new EnvRunAdmin({ runs: client, store: new Store(db.db), drivers });
  const companyId = uniqueId('co');
  const base = {
    host: '127.0.0.1',
    port: sshd.port,
    username: sshd.username,
    remoteWorkspacePath: mkdtempSync(join(tmpdir(), 'remote-')),
    privateKeySecretRef: 'env:ENVRUN_SSH_KEY',
  };
  const good = await admin.createEnvironment({
    companyId,
    name: 'good',
    driver: 'ssh',
    config: { ...base, knownHosts: sshd.knownHosts },
  });
  const bad = await admin.createEnvironment({
    companyId,
    name: 'bad',
    driver: 'ssh',
    config: { ...base, knownHosts: 'nothing' },
  });
  const ok = runRequest({
    companyId,
    environmentId: good.id,
    runtimeOverlay: { provisionCommand: 'env; echo to-stderr >&2' },
  });
  await client.startRunAndWaitReady(ok);
  await client.completeRun(companyId, ok.heartbeatRunId, { status: 'succeeded' });
  const failing = runRequest({ companyId, environmentId: good.id, runtimeOverlay: { provisionCommand: 'exit 9' } });
  await expectRunError(client.startRunAndWaitReady(failing), 'workspace_realization_failed');
  const refused = runRequest({ companyId, environmentId: bad.id });
  await expectRunError(client.startRunAndWaitReady(refused), 'lease_acquire_failed');
  await new Promise((r) => setTimeout(r, 1000)); // let the failed runs release
  await connection.close();
  worker.kill('SIGTERM');
  await exited;
  expect(worker.exitCode, 'the worker must not crash').toBe(0);

  const cli = await ensureTemporalCli();
  const histories = [ok, failing, refused]
    .map((r) =>
      execFileSync(cli, [
        'workflow',
        'show',
        '--address',
        inject('temporalAddress'),
        '--workflow-id',
        runWorkflowId(companyId, r.heartbeatRunId),
        '--output',
        'json',
      ]).toString(),
    )
    .map(historyText);
  const leases = JSON.stringify(await new Store(db.db).listLeases(companyId));
  // The logs searched are the JSON lines an operator ships (every stdout line is one), at DEBUG: the
  // worker's, every step's of the three runs, the SDK's and Core's; and whatever reached stderr.
  const lines = stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const r of [ok, failing, refused]) {
    const workflowId = runWorkflowId(companyId, r.heartbeatRunId);
    const steps = new Set(
      lines.filter((l) => l.workflowId === workflowId && l.msg === 'step started').map((l) => l.step),
    );
    expect([...steps], workflowId).toEqual(
      expect.arrayContaining(['resolveEnvironment', 'acquireLease', 'releaseLease']),
    );
  }
  const stepFailed = lines.find((l) => l.msg === 'step failed' && l.step === 'prepareWorkspace');
  expect(stepFailed?.errorMessage).toContain('provision command exited with code 9');
  expect(lines.some((l) => l.sdkComponent === 'worker')).toBe(true);
  expect(lines.some((l) => l.sdkComponent === 'core')).toBe(true);
  expect(lines.some((l) => l.level === 'debug')).toBe(true);
  const logs = `${stdout}\n${stderr}`;
  const dbPassword = new URL(db.url).password;
  if (dbPassword) expect(logs.includes(dbPassword), 'the database password found in logs').toBe(false);
  const activity = JSON.stringify(await new Store(db.db).listActivity(companyId));
  expect(logs).toContain('provision command exited with code 9'); // the search looks at real logs
  expect(histories.join('')).toContain('env:ENVRUN_SSH_KEY'); // decoded payloads: the reference is there, the key is not
  const keyLines = sshd.privateKey.split('\n').filter((l) => l && !l.startsWith('-----'));
  expect(keyLines.length).toBeGreaterThan(2);
  for (const [name, text] of Object.entries({ logs, histories: histories.join('\n'), leases, activity })) {
    for (const line of keyLines) expect(text.includes(line), `key material found in ${name}`).toBe(false);
  }
});
