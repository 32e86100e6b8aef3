// `npm run dev` in a real terminal: Ctrl+C sends SIGINT to the whole foreground process group (npm, node, the
// dev server, tee alike), not to one chosen process; closing the terminal sends SIGHUP. Everything the command
// started must stop: the worker, the Temporal dev server, esbuild, and the embedded PostgreSQL daemon (detached,
// so no signal of the terminal reaches it) with its postgres processes. Piped to `tee`, dev's output closes
// when tee goes first, and dev must still stop what it started. Checked by the processes it started, by pid.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { freePort } from '../../lib/net.js';
import { readStoreInfo, stopEmbeddedStore } from '../../store/embedded.js';
import { describeProcesses, killAll, processTree, stillRunning, type ProcessInfo } from '../support/process-tree.js';
import { until } from '../support/runs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const cases = [
  { name: 'Ctrl+C', command: 'npm run dev', stop: 'ctrl-c' },
  { name: 'Ctrl+C, piped to tee', command: 'npm run dev 2>&1 | tee "$ENVRUN_DATA_DIR.log"', stop: 'ctrl-c' },
  {
    name: 'the terminal closed, piped to tee',
    command: 'npm run dev 2>&1 | tee "$ENVRUN_DATA_DIR.log"',
    stop: 'hangup',
  },
] as const;

it.each(cases)(
  '$name: npm run dev stops everything it started',
  async ({ command, stop }) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'envrun-devtty-'));
    const [port, uiPort] = [await freePort(), await freePort()];
    const session = `envrun-dev-${process.pid}-${stop}-${command.length}`;
    const script = join(dataDir, 'run-dev.sh');
    writeFileSync(
      script,
      `cd ${ROOT}\nexport ENVRUN_DATA_DIR=${dataDir} TEMPORAL_ADDRESS=127.0.0.1:${port} ENVRUN_UI_PORT=${uiPort}\n${command}\n`,
    );
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '200', '-y', '50', `bash ${script}`]);
    const tmux = (...args: string[]) => execFileSync('tmux', args, { encoding: 'utf8' });
    const sessionAlive = () => spawnSync('tmux', ['has-session', '-t', session]).status === 0;
    let started: ProcessInfo[] = [];
    try {
      const panePid = Number(tmux('display-message', '-p', '-t', session, '#{pane_pid}').trim());
      await until(
        'the demo run to be ready',
        async () => tmux('capture-pane', '-p', '-t', session).includes('Ctrl+C stops'),
        180_000,
      );
      const info = readStoreInfo(dataDir);
      expect(info, 'the embedded store is running').not.toBeNull();
      started = processTree(panePid, info!.pid);
      const commands = describeProcesses(started).join('\n');
      // What the snapshot must hold for the test to mean anything: dev, its dev server, the store and postgres.
      expect(commands).toContain('scripts/dev.ts');
      expect(commands).toContain('start-dev');
      expect(started.map((p) => p.pid)).toContain(info!.pid);
      expect(commands).toMatch(/\/bin\/postgres /);

      if (stop === 'ctrl-c') tmux('send-keys', '-t', session, 'C-c');
      else tmux('kill-session', '-t', session); // the terminal goes: SIGHUP to its processes
      await until('npm run dev and the shell to exit', async () => !sessionAlive(), 60_000);
      await until('what dev started to end', async () => stillRunning(started).length === 0, 60_000).catch(
        () => undefined,
      );
      expect(describeProcesses(stillRunning(started))).toEqual([]);
      expect(readStoreInfo(dataDir)).toBeNull();
    } finally {
      spawnSync('tmux', ['kill-session', '-t', session]);
      killAll(started);
      await stopEmbeddedStore(dataDir).catch(() => undefined);
    }
  },
  300_000,
);
