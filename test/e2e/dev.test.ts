// The README's first command: `npm run dev` brings up the dev server, the embedded store, a worker and a
// demo run to ready, and prints the UI address and the workflow id. Run here on free ports, in a temp folder.
// What it started ends with it, also on SIGTERM to npm (a supervisor's stop); an embedded store another
// process started stays running (it is shared: docs/operations.md).
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { freePort } from '../../lib/net.js';
import { ensureEmbeddedStore, readStoreInfo, stopEmbeddedStore } from '../../store/embedded.js';
import { describeProcesses, killAll, processTree, stillRunning, type ProcessInfo } from '../support/process-tree.js';
import { until } from '../support/runs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

async function devEnv(dataDir: string): Promise<NodeJS.ProcessEnv> {
  const [port, uiPort] = [await freePort(), await freePort()];
  return {
    ...process.env,
    ENVRUN_DATA_DIR: dataDir,
    TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
    ENVRUN_UI_PORT: String(uiPort),
  };
}

function runDevToEnd(env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'npm',
      ['run', 'dev'],
      { cwd: ROOT, timeout: 240_000, env: { ...env, ENVRUN_DEV_EXIT_AFTER_DEMO: '1' } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

it('npm run dev reaches a ready demo run and stops everything it started', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-dev-'));
  const env = await devEnv(dataDir);
  const out = await runDevToEnd(env);
  expect(out.code, out.stderr + out.stdout).toBe(0);
  expect(out.stdout).toMatch(/run is READY: target \{"kind":"remote","transport":"sandbox"/);
  expect(out.stdout).toContain(
    `Temporal Web UI:  http://127.0.0.1:${env.ENVRUN_UI_PORT}/namespaces/default/workflows/envrun%2Fdemo%2Fdemo-`,
  );
  expect(out.stdout).toMatch(/workflow id:\s+envrun\/demo\/demo-\d+/);
  expect(out.stdout).toContain('demo run completed and released');
  expect(existsSync(join(dataDir, 'temporal.db'))).toBe(true);
  expect(readStoreInfo(dataDir)).toBeNull(); // the embedded store it started is stopped again
}, 300_000);

it('an embedded store that was running before dev keeps running after it', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-dev-shared-'));
  await ensureEmbeddedStore(dataDir);
  try {
    const before = readStoreInfo(dataDir);
    const out = await runDevToEnd(await devEnv(dataDir));
    expect(out.code, out.stderr + out.stdout).toBe(0);
    expect(out.stdout).toContain('demo run completed and released');
    expect(readStoreInfo(dataDir)?.pid).toBe(before!.pid);
  } finally {
    await stopEmbeddedStore(dataDir);
  }
}, 300_000);

it('SIGTERM to npm run dev stops everything dev started', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-dev-term-'));
  const npm = spawn('npm', ['run', 'dev'], {
    cwd: ROOT,
    env: await devEnv(dataDir),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  npm.stdout.on('data', (c: Buffer) => (output += c.toString()));
  npm.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)));
  let started: ProcessInfo[] = [];
  try {
    await until('the demo run to be ready', async () => output.includes('Ctrl+C stops'), 180_000);
    const info = readStoreInfo(dataDir);
    expect(info, output).not.toBeNull();
    started = processTree(npm.pid!, info!.pid);
    expect(describeProcesses(started).join('\n')).toContain('start-dev');
    npm.kill('SIGTERM'); // npm alone: npm relays it to the script's process
    expect(await exited, output).toBe(0);
    await until('what dev started to end', async () => stillRunning(started).length === 0, 60_000).catch(
      () => undefined,
    );
    expect(describeProcesses(stillRunning(started))).toEqual([]);
    expect(readStoreInfo(dataDir)).toBeNull();
    expect(output).toContain('stopping (SIGTERM)');
  } finally {
    npm.kill('SIGKILL');
    killAll(started);
    await stopEmbeddedStore(dataDir).catch(() => undefined);
  }
}, 300_000);
