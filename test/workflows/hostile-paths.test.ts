// Hostile paths and commands, end to end on real runs. A path with "..", a branch name with shell code or an
// SSH host/user that is an option (-oProxyCommand=…) is refused by the worker itself, naming the field, even
// when it arrives around the client; shell code in paths, refs, arguments and environment values that do
// reach a command is passed as data. Each piece of shell code would create a `pwned-*` file in `root` if any
// shell ever interpreted it: none may exist.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvalidInputError, toRunFailedError } from '../../client/errors.js';
import { runWorkflowId } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { expectRunError, runEnd, runRequest, tempWorkspace } from '../support/runs.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let h: Harness;
let sshd: Sshd;
const root = mkdtempSync(join(tmpdir(), 'envrun-hostile-'));
const KEY_VAR = 'ENVRUN_TEST_HOSTILE_KEY';

/** Shell code in three spellings; interpreted by any shell, it creates root/pwned-<name>. */
const pwn = (name: string) =>
  `$(touch ${root}/pwned-${name}) \`touch ${root}/pwned-${name}\` ;touch ${root}/pwned-${name}; 'q' "q"`;
const pwned = () => readdirSync(root).filter((f) => f.startsWith('pwned-'));

function gitRepo(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const git = (...args: string[]) =>
    execFileSync('git', ['-C', dir, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], {
      env: { PATH: process.env.PATH!, HOME: root },
    });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'app.txt'), 'v1');
  git('add', '.');
  git('commit', '-qm', 'init');
  return dir;
}

/** The stderr of a git command that must fail. */
function gitFailure(dir: string, args: string[]): string {
  try {
    execFileSync('git', ['-C', dir, ...args], { env: { PATH: process.env.PATH!, HOME: root }, stdio: 'pipe' });
  } catch (err) {
    return String((err as { stderr: Buffer }).stderr);
  }
  throw new Error(`git ${args.join(' ')} succeeded`);
}

beforeAll(async () => {
  sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
  process.env[KEY_VAR] = sshd.privateKey;
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
  await sshd?.stop();
});
afterEach(() => {
  expect(pwned()).toEqual([]);
});

const sshConfig = (over: Record<string, unknown> = {}) => ({
  host: '127.0.0.1',
  port: sshd.port,
  username: sshd.username,
  remoteWorkspacePath: mkdtempSync(join(tmpdir(), 'envrun-remote-')),
  privateKeySecretRef: `env:${KEY_VAR}`,
  knownHosts: sshd.knownHosts,
  ...over,
});

describe('refused by the worker, naming the field, even around the client', () => {
  const ws = tempWorkspace();
  it.each([
    ['request.workspace.cwd', { baseCwd: ws, cwd: `${ws}/../../etc` }],
    ['request.workspace.baseCwd', { baseCwd: `${ws}/..`, cwd: ws }],
    [
      'request.workspace.worktreePath',
      { baseCwd: ws, cwd: `${ws}/wt`, strategy: 'git_worktree', branchName: 'b', worktreePath: `${ws}/../escape` },
    ],
    [
      'request.workspace.branchName',
      {
        baseCwd: ws,
        cwd: `${ws}/wt`,
        strategy: 'git_worktree',
        branchName: `b${pwn('branch')}`,
        worktreePath: `${ws}/wt`,
      },
    ],
    [
      'request.workspace.branchName',
      {
        baseCwd: ws,
        cwd: `${ws}/wt`,
        strategy: 'git_worktree',
        branchName: '--upload-pack=touch /tmp/x',
        worktreePath: `${ws}/wt`,
      },
    ],
  ])('%s: %j', async (field, workspace) => {
    const companyId = uniqueId('co');
    // A raw Temporal client skips EnvRunClient's parsing: the workflow's first step must refuse it.
    const handle = await h.client.temporal.workflow.start('environmentRun', {
      workflowId: runWorkflowId(companyId, 'r'),
      taskQueue: h.taskQueue,
      args: [{ companyId, heartbeatRunId: 'r', workspace }],
    });
    const err = toRunFailedError(await handle.result().catch((e: unknown) => e));
    expect(err?.code).toBe('invalid_request');
    expect(err?.message).toContain(field);
    expect(await h.store.listRunLeases(companyId, 'r')).toEqual([]);
    expect(existsSync(`${ws}/wt`) || existsSync(join(ws, '..', 'escape'))).toBe(false);
  });

  it.each([
    ['config.host', { host: `-oProxyCommand=touch ${root}/pwned-host` }],
    ['config.username', { username: `-oProxyCommand=touch ${root}/pwned-user` }],
    ['config.remoteWorkspacePath', { remoteWorkspacePath: '/srv/../etc' }],
  ])(
    'an SSH environment row with a hostile %s (written around the client): no run, probe or update uses it',
    async (field, hostile) => {
      const companyId = uniqueId('co');
      const env = await h.store.createEnvironment({
        companyId,
        name: 'bad',
        driver: 'ssh',
        config: sshConfig(hostile),
      });
      const req = runRequest({ companyId, environmentId: env.id });
      const err = await expectRunError(h.client.startRunAndWaitReady(req), 'unsupported_environment');
      expect(err.message).toContain(field);
      await runEnd(h, companyId, req.heartbeatRunId);
      expect(await h.store.listRunLeases(companyId, req.heartbeatRunId)).toEqual([]);
      await expect(h.admin.probeEnvironment(companyId, env.id)).rejects.toThrow(field);

      // Through the client, an update to the same value is refused and the row is left as it was.
      const good = await h.admin.createEnvironment({ companyId, name: 'good', driver: 'ssh', config: sshConfig() });
      const update = h.admin.updateEnvironment(companyId, good.id, { config: { ...good.config, ...hostile } });
      await expect(update).rejects.toThrow(InvalidInputError);
      await expect(update).rejects.toThrow(field);
      expect(await h.store.getEnvironmentById(good.id)).toEqual(good);
    },
  );
});

describe('passed as data, never to a shell', () => {
  it('local git worktree: repo and worktree paths full of shell code; exec arguments and env values too', async () => {
    const companyId = uniqueId('co');
    const repo = gitRepo(join(root, `repo ${pwn('repo')}`));
    const worktreePath = join(root, `wt ${pwn('worktree')}`);
    const req = runRequest({
      companyId,
      workspace: {
        baseCwd: repo,
        cwd: worktreePath,
        strategy: 'git_worktree',
        branchName: 'agent/hostile',
        worktreePath,
      },
      runtimeOverlay: { provisionCommand: 'pwd > .where' }, // a shell command by design; its cwd is not spliced into it
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.executionTarget).toMatchObject({ kind: 'local', cwd: worktreePath });
    expect(readFileSync(join(worktreePath, '.where'), 'utf8')).toBe(`${worktreePath}\n`);
    expect(execFileSync('git', ['-C', worktreePath, 'rev-parse', '--abbrev-ref', 'HEAD']).toString().trim()).toBe(
      'agent/hostile',
    );

    const arg = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'printf',
      args: ['%s', pwn('arg')],
      env: {},
    });
    expect(arg).toMatchObject({ exitCode: 0, stdout: pwn('arg') });
    const envValue = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'printenv',
      args: ['V'],
      env: { V: pwn('env') },
    });
    expect(envValue).toMatchObject({ exitCode: 0, stdout: `${pwn('env')}\n` });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  });

  it('a base ref that would be an option is refused naming the field; one full of shell code reaches git as one argument', async () => {
    const companyId = uniqueId('co');
    const repo = gitRepo(join(root, uniqueId('repo')));
    const worktreePath = join(root, uniqueId('wt'));
    const workspace = {
      baseCwd: repo,
      cwd: worktreePath,
      strategy: 'git_worktree' as const,
      branchName: 'agent/ref',
      worktreePath,
    };
    const optionLike = runRequest({ companyId, workspace: { ...workspace, repoRef: '--upload-pack=x' } });
    await expect(h.client.startRun(optionLike)).rejects.toThrow(/request\.workspace\.repoRef: must not start with "-"/);
    expect(await h.client.getRun(companyId, optionLike.heartbeatRunId)).toBeNull();

    const req = runRequest({
      companyId,
      workspace: {
        ...workspace,
        repoRef: `x$(touch\${IFS}${root}/pwned-ref);touch\${IFS}${root}/pwned-ref\`touch\${IFS}${root}/pwned-ref\``,
      },
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    // git's own complaint, not its "Preparing worktree (new branch …)" progress line.
    expect(err.message).toMatch(/^git worktree failed: (fatal|error): /);
    await runEnd(h, companyId, req.heartbeatRunId);
    expect(existsSync(worktreePath)).toBe(false);
    expect(execFileSync('git', ['-C', repo, 'branch', '--list', 'agent/ref']).toString()).toBe('');
  });

  it("a base ref that does not exist: the run fails with git's fatal line, naming the ref", async () => {
    const companyId = uniqueId('co');
    const repo = gitRepo(join(root, uniqueId('repo')));
    const worktreePath = join(root, uniqueId('wt'));
    const req = runRequest({
      companyId,
      workspace: {
        baseCwd: repo,
        cwd: worktreePath,
        strategy: 'git_worktree',
        branchName: 'agent/missing-base',
        worktreePath,
        repoRef: 'no-such-base',
      },
    });
    const err = await expectRunError(h.client.startRunAndWaitReady(req), 'workspace_realization_failed');
    // The same line git prints for it, e.g. "fatal: invalid reference: no-such-base" or "fatal: not a valid object name: 'no-such-base'".
    const direct = gitFailure(repo, [
      'worktree',
      'add',
      '-b',
      'probe-branch',
      '--',
      join(root, uniqueId('probe-wt')),
      'no-such-base',
    ]);
    const fatal = direct.split('\n').find((l) => l.startsWith('fatal:'));
    expect(fatal).toContain('no-such-base');
    expect(err.message).toBe(`git worktree failed: ${fatal}`);
    expect(err.message).not.toContain('Preparing worktree');
    await runEnd(h, companyId, req.heartbeatRunId);
    expect(existsSync(worktreePath)).toBe(false);
  });

  it('ssh: local and remote paths full of shell code; provision, exec, sync back and removal all quote them', async () => {
    const companyId = uniqueId('co');
    const remoteWorkspacePath = join(mkdtempSync(join(tmpdir(), 'envrun-remote-')), `r ${pwn('remote')}`);
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: sshConfig({ remoteWorkspacePath }),
    });
    const cwd = join(root, `local ${pwn('local')}`);
    mkdirSync(cwd, { recursive: true });
    writeFileSync(join(cwd, `file ${pwn('file').replaceAll('/', '_')}`), 'local');
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: 'pwd > .where' },
    });
    const result = await h.client.startRunAndWaitReady(req);
    const remoteCwd = (result.executionTarget as { remoteCwd: string }).remoteCwd;
    expect(remoteCwd.startsWith(`${remoteWorkspacePath}/`)).toBe(true);
    expect(readFileSync(join(remoteCwd, '.where'), 'utf8')).toBe(`${remoteCwd}\n`);
    expect(readdirSync(remoteCwd).sort()).toEqual(readdirSync(cwd).concat('.where').sort());

    const arg = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'printf',
      args: ['%s', pwn('arg')],
      env: {},
    });
    expect(arg).toMatchObject({ exitCode: 0, stdout: pwn('arg') });
    const envValue = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'printenv',
      args: ['V'],
      env: { V: pwn('env') },
    });
    expect(envValue).toMatchObject({ exitCode: 0, stdout: `${pwn('env')}\n` });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(cwd, '.where'), 'utf8')).toBe(`${remoteCwd}\n`); // synced back
    expect(existsSync(remoteCwd)).toBe(false);
    expect(existsSync(remoteWorkspacePath)).toBe(true);
  });
});
