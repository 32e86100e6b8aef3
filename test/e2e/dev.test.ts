// The README's first command: `npm run dev` brings up the dev server, the embedded store, a worker and a
// demo run to ready, and prints the UI address and the workflow id. Run here on free ports, in a temp folder.
import { execFile } from 'node:child_process';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { readStoreInfo } from '../../store/embedded.js';
import { freePort } from '../../scripts/dev-server.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

it('npm run dev reaches a ready demo run and stops everything it started', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-dev-'));
  const [port, uiPort] = [await freePort(), await freePort()];
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'npm',
      ['run', 'dev'],
      {
        cwd: ROOT,
        timeout: 240_000,
        env: {
          ...process.env,
          ENVRUN_DATA_DIR: dataDir,
          TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
          ENVRUN_UI_PORT: String(uiPort),
          ENVRUN_DEV_EXIT_AFTER_DEMO: '1',
        },
      },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
  expect(out.code, out.stderr + out.stdout).toBe(0);
  expect(out.stdout).toMatch(/run is READY: target \{"kind":"remote","transport":"sandbox"/);
  expect(out.stdout).toContain(
    `Temporal Web UI:  http://127.0.0.1:${uiPort}/namespaces/default/workflows/envrun%2Fdemo%2Fdemo-`,
  );
  expect(out.stdout).toMatch(/workflow id:\s+envrun\/demo\/demo-\d+/);
  expect(out.stdout).toContain('demo run completed and released');
  expect(existsSync(join(dataDir, 'temporal.db'))).toBe(true);
  expect(readStoreInfo(dataDir)).toBeNull(); // the embedded store it started is stopped again
}, 300_000);
