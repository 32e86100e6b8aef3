// ATTACK: a command's environment on the host's command lines. Values given with `run exec --env-var` (or
// `env` in an exec request) became bwrap `--setenv` arguments and words of the ssh driver's remote
// command: while the command ran, any local user read them in `ps` or /proc/<pid>/cmdline (bwrap's runs as
// `nobody`, the remote shell's on the ssh host). Here every host process's command line is read while a
// command that holds a secret in its environment waits, through the provider, the CLI and the ssh driver;
// the command still sees the value. `--env-file` keeps the values off the CLI's own command line.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEnvFile } from '../../client/cli/input.js';
import { InvalidInputError } from '../../client/errors.js';
import { remoteCommand } from '../../drivers/ssh/connection.js';
import { runCli } from '../support/cli.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace, until } from '../support/runs.js';
import { openSandbox, type Sandbox } from '../support/sandbox.js';
import { startSshd, type Sshd } from '../support/sshd.js';

const secret = () => `envrun-secret-${uniqueId('v')}`;

/**
 * Reads every host process's command line over and over, from before a command starts until it ends, and
 * collects those that hold the value ("pid: command line"). A separate process, so it keeps reading while
 * this one waits; it gets the value in its environment, which no other user can read.
 */
const WATCHER = `
const { readdirSync, readFileSync } = require('node:fs');
const value = process.env.WATCH_FOR;
const hits = new Set();
let passes = 0;
function pass() {
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = readFileSync('/proc/' + name + '/cmdline', 'latin1');
      if (cmdline.includes(value)) hits.add(name + ': ' + cmdline.replace(/\\0/g, ' ').slice(0, 300));
    } catch {}
  }
  if (++passes === 1) process.stdout.write('ready\\n');
  setImmediate(pass);
}
process.on('SIGTERM', () => { process.stdout.write(JSON.stringify([...hits]) + '\\n'); process.exit(0); });
pass();
`;

interface Watch {
  stop(): Promise<string[]>;
}

async function watchCommandLines(value: string): Promise<Watch> {
  const child = spawn(process.execPath, ['-e', WATCHER], {
    env: { WATCH_FOR: value },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
  await until('the watcher to start', async () => out.startsWith('ready\n'));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let stopped: Promise<string[]> | null = null;
  return {
    stop: () =>
      (stopped ??= (async () => {
        child.kill('SIGTERM');
        await exited;
        return JSON.parse(out.slice('ready\n'.length)) as string[];
      })()),
  };
}

/**
 * A command that writes $TOKEN to `seen` in its folder, then waits until `go` appears there, then prints
 * $TOKEN. The host's command lines are watched from before it starts until it ends.
 */
const WAITER = 'printf %s "$TOKEN" > seen; while [ ! -e go ]; do sleep 0.05; done; printf %s "$TOKEN"';
async function watched<T>(
  folder: () => string,
  value: string,
  start: () => Promise<T>,
): Promise<{ leaks: string[]; seen: string; result: T }> {
  const watch = await watchCommandLines(value);
  try {
    let settled: { result?: T; error?: unknown } | null = null;
    const running = start().then(
      (result) => (settled = { result }),
      (error: unknown) => (settled = { error }),
    );
    await until(
      'the command to start',
      async () => {
        if (settled) throw new Error(`the command ended before it started: ${JSON.stringify(settled)}`);
        return existsSync(join(folder(), 'seen'));
      },
      30_000,
    );
    const seen = readFileSync(join(folder(), 'seen'), 'utf8');
    writeFileSync(join(folder(), 'go'), '');
    await running;
    const end = settled as { result?: T; error?: unknown } | null;
    if (end && 'error' in end) throw end.error as Error;
    return { leaks: await watch.stop(), seen, result: end!.result as T };
  } finally {
    await watch.stop().catch(() => undefined);
  }
}

describe('bubblewrap: the provider', () => {
  const opened: Sandbox[] = [];
  afterAll(async () => {
    for (const box of opened) await box.close();
  });

  it.each(['none', 'outbound'] as const)(
    'network %s: no host command line holds the value (bwrap, prlimit, slirp4netns); the command sees it',
    async (network) => {
      const box = await openSandbox({ network });
      opened.push(box);
      const value = secret();
      const { leaks, seen, result } = await watched(
        () => box.hostWorkspace,
        value,
        () => box.sh(WAITER, { env: { TOKEN: value, OTHER: `${value}-2` } }),
      );
      expect(leaks).toEqual([]);
      expect(seen).toBe(value);
      expect(result).toMatchObject({ exitCode: 0, stdout: value });
    },
  );

  it('a value cannot smuggle sandbox options in (a NUL would end it early)', async () => {
    const box = await openSandbox();
    opened.push(box);
    const smuggled = box.sh('ls /host-root 2>&1; echo ran', { env: { X: 'a\0--bind\0/\0/host-root' } });
    await expect(smuggled).rejects.toThrow(/NUL/);
  });
});

describe('through the CLI and the worker', () => {
  let h: Harness;
  let sshd: Sshd;
  const KEY_VAR = 'ENVRUN_TEST_ENV_ARGV_KEY';
  beforeAll(async () => {
    sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
    process.env[KEY_VAR] = sshd.privateKey;
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.close();
    await sshd?.stop();
  });

  function envFile(text: string): string {
    const file = join(mkdtempSync(join(tmpdir(), 'envrun-env-file-')), 'env');
    writeFileSync(file, text);
    chmodSync(file, 0o600);
    return file;
  }

  it('run exec --env-file on a bubblewrap sandbox: neither the CLI nor bwrap shows the value', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'bwrap',
      driver: 'sandbox',
      config: { provider: 'bubblewrap' },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    await h.client.startRunAndWaitReady(req);
    const sandboxes = join(h.dataDir, 'sandboxes', 'bubblewrap');
    expect(readdirSync(sandboxes)).toHaveLength(1); // this run's
    const workspace = join(sandboxes, readdirSync(sandboxes)[0]!, 'workspace');
    const value = secret();
    const file = envFile(`# the agent's token\n\nTOKEN=${value}\nEMPTY=\nWITH_EQUALS=a=b\n`);
    const { leaks, seen, result } = await watched(
      () => workspace,
      value,
      () =>
        runCli(h, [
          'run',
          'exec',
          '--company',
          companyId,
          '--run',
          req.heartbeatRunId,
          '--env-file',
          file,
          '--',
          'sh',
          '-c',
          `${WAITER}; printf ' %s|%s' "$EMPTY" "$WITH_EQUALS"`,
        ]),
    );
    expect(leaks).toEqual([]);
    expect(seen).toBe(value);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(`${value} |a=b`);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('--env-var overrides --env-file for the same name', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'f',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({ companyId, environmentId: env.id });
    await h.client.startRunAndWaitReady(req);
    const file = envFile('A=from-file\nB=from-file\n');
    const res = await runCli(h, [
      'run',
      'exec',
      '--company',
      companyId,
      '--run',
      req.heartbeatRunId,
      '--env-file',
      file,
      '--env-var',
      'B=from-option',
      '--',
      'sh',
      '-c',
      'echo "$A $B"',
    ]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toBe('from-file from-option\n');
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it.each([
    ['NOEQUALS\n', /--env-file: line 1: must be NAME=VALUE/],
    ['A=1\n=nothing\n', /--env-file: line 2: must be NAME=VALUE/],
    ['A=1\n\n1BAD=nothing\n', /--env-file: line 3: the name must be letters, digits and _/],
    ['A=1\nexport B=nothing\n', /--env-file: line 2: the name must be letters, digits and _/],
  ])('--env-file %j is refused naming the line, before anything runs', async (text, message) => {
    const res = await runCli(h, [
      'run',
      'exec',
      '--company',
      'co',
      '--run',
      'r',
      '--env-file',
      envFile(text),
      '--',
      'true',
    ]);
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(res.stderr).not.toContain('nothing'); // a value is never echoed
  });

  it('a missing --env-file stops the CLI before anything runs', async () => {
    const missing = join(tmpdir(), uniqueId('no-such-env-file'));
    // Node itself looks for a file after any `--env-file` on its command line (script arguments too) and
    // exits first when there is none; either way nothing runs and the message names the file.
    const res = await runCli(h, ['run', 'exec', '--company', 'co', '--run', 'r', '--env-file', missing, '--', 'true']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain(missing);
    expect(() => readEnvFile(missing)).toThrow(InvalidInputError);
    expect(() => readEnvFile(missing)).toThrow(`--env-file: cannot read ${missing}`);
  });

  it("the ssh driver: the remote host's command lines do not hold the value either", async () => {
    // The command the remote shell runs holds names and quoting only, never a value.
    expect(remoteCommand('/w', { TOKEN: 'the-value' }, 'sh', ['-c', 'x']).command).not.toContain('the-value');
    const companyId = uniqueId('co');
    const remote = mkdtempSync(join(tmpdir(), 'envrun-remote-'));
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: {
        host: '127.0.0.1',
        port: sshd.port,
        username: sshd.username,
        remoteWorkspacePath: remote,
        privateKeySecretRef: `env:${KEY_VAR}`,
        knownHosts: sshd.knownHosts,
      },
    });
    const req = runRequest({ companyId, environmentId: env.id, cwd: tempWorkspace() });
    const ready = await h.client.startRunAndWaitReady(req);
    const remoteCwd = (ready.executionTarget as { remoteCwd: string }).remoteCwd;
    const value = `${secret()} 'quoted' "and" $(not run) \\ é\nsecond line`;
    const { leaks, seen, result } = await watched(
      () => remoteCwd,
      value.split(' ')[0]!,
      () => h.admin.exec(companyId, req.heartbeatRunId, { command: 'sh', args: ['-c', WAITER], env: { TOKEN: value } }),
    );
    expect(leaks).toEqual([]);
    expect(seen).toBe(value);
    expect(result).toMatchObject({ exitCode: 0, stdout: value });
    const withStdin = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'sh',
      args: ['-c', 'cat; printf " %s" "$ONE"'],
      env: { ONE: '1' },
      stdin: 'the command still gets its stdin',
    });
    expect(withStdin).toMatchObject({ exitCode: 0, stdout: 'the command still gets its stdin 1' });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });
});
