// `npm run dev` in a real terminal: Ctrl+C sends SIGINT to the whole foreground process group (npm, tsx,
// node and the dev server alike), not to one chosen process. Everything the command started must stop:
// the worker, the Temporal dev server and the embedded PostgreSQL daemon with its postgres processes.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { freePort } from '../../scripts/dev-server.js';
import { readStoreInfo } from '../../store/embedded.js';
import { until } from '../support/runs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes whose command line mentions the folder (postgres, the daemon, the dev server). */
function processesUsing(folder: string): string[] {
  const out = spawnSync('pgrep', ['-af', folder], { encoding: 'utf8' }).stdout ?? '';
  return out.split('\n').filter((line) => line.trim() && !line.includes('pgrep'));
}

it('Ctrl+C in a terminal stops the worker, the dev server and the embedded PostgreSQL', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-devtty-'));
  const [port, uiPort] = [await freePort(), await freePort()];
  const session = `envrun-dev-${process.pid}`;
  const script = join(dataDir, 'run-dev.sh');
  writeFileSync(
    script,
    `cd ${ROOT}\nexport ENVRUN_DATA_DIR=${dataDir} TEMPORAL_ADDRESS=127.0.0.1:${port} ENVRUN_UI_PORT=${uiPort}\nnpm run dev\n`,
  );
  execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '200', '-y', '50', `bash ${script}`]);
  const sessionAlive = () => spawnSync('tmux', ['has-session', '-t', session]).status === 0;
  try {
    const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
    await until('the demo run to be ready', async () => screen().includes('Ctrl+C stops'), 180_000);
    const info = readStoreInfo(dataDir);
    expect(info, 'the embedded store is running').not.toBeNull();
    expect(alive(info!.pid)).toBe(true);
    expect(processesUsing(dataDir).length).toBeGreaterThan(0);

    execFileSync('tmux', ['send-keys', '-t', session, 'C-c']);
    // The shell in the pane ends when npm run dev does (the signal reached it too).
    await until('npm run dev to exit', async () => !sessionAlive(), 60_000);
    await until(
      'its processes to end',
      async () => !alive(info!.pid) && processesUsing(dataDir).length === 0,
      30_000,
    ).catch(() => undefined);
    expect(processesUsing(dataDir)).toEqual([]);
    expect(alive(info!.pid)).toBe(false);
    expect(readStoreInfo(dataDir)).toBeNull();
  } finally {
    spawnSync('tmux', ['kill-session', '-t', session]);
  }
}, 300_000);
