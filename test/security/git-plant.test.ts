// ATTACK: agent code plants git configuration that runs commands — `core.fsmonitor`, hooks
// (post-checkout, reference-transaction), a smudge filter named in `.git/info/attributes` — so that the
// next git command on the host runs it with the worker's rights: envrun's own `git worktree add` (local
// driver) or `git ls-files` (ssh upload), or the user's `git status` in the repository the ssh driver synced
// the plant back into. Every planted command appends its $PWD to a marker file in `root`: none may exist.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest } from '../support/runs.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let h: Harness;
let sshd: Sshd;
const root = mkdtempSync(join(tmpdir(), 'envrun-gitplant-'));
const KEY_VAR = 'ENVRUN_TEST_GITPLANT_KEY';
const userEnv = {
  PATH: process.env.PATH!,
  HOME: root,
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@t',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@t',
};

/** What ran: marker file → the folders it ran in. */
function ran(): Record<string, string[]> {
  return Object.fromEntries(
    readdirSync(root)
      .filter((f) => f.startsWith('ran-'))
      .map((f) => [f, readFileSync(join(root, f), 'utf8').trim().split('\n')]),
  );
}

function gitRepo(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { env: userEnv });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'app.txt'), 'v1');
  git('add', '.');
  git('commit', '-qm', 'init');
  return dir;
}

/** A shell script planting every trap into the git directory `$d` (set by the caller). */
const plantInto = (d: string) => `
  mark() { printf 'echo "$PWD" >> %s/ran-%s\\n' "${root}" "$1"; }
  git config --file "${d}/config" core.fsmonitor "$(mark fsmonitor); false"
  git config --file "${d}/config" filter.evil.smudge "$(mark smudge); cat"
  git config --file "${d}/config" filter.evil.clean "$(mark clean); cat"
  git config --file "${d}/config" filter.evil.required true
  mkdir -p "${d}/info" "${d}/hooks"
  echo '* filter=evil' > "${d}/info/attributes"
  for hook in post-checkout reference-transaction pre-commit post-index-change; do
    printf '#!/bin/sh\\n%s\\n' "$(mark "hook-$hook")" > "${d}/hooks/$hook"
    chmod +x "${d}/hooks/$hook"
  done
`;

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
  const what = ran();
  for (const f of Object.keys(what)) rmSync(join(root, f));
  expect(what).toEqual({});
});

describe('git plants never run on the host', () => {
  it("local worktree: what one run plants in the repository does not run in the next run's `git worktree add`", async () => {
    const repo = gitRepo(join(root, 'repo-local'));
    const companyId = uniqueId('co');
    const worktree = (name: string) => ({
      baseCwd: repo,
      cwd: join(root, name),
      strategy: 'git_worktree' as const,
      branchName: `agent/${name}`,
      worktreePath: join(root, name),
    });
    const first = runRequest({ companyId, workspace: worktree('wt-one') });
    await h.client.startRunAndWaitReady(first);
    // The agent's command: in a worktree, the shared git directory is one `git rev-parse` away.
    const planted = await h.admin.exec(companyId, first.heartbeatRunId, {
      command: '/bin/sh',
      args: ['-c', `d=$(git rev-parse --path-format=absolute --git-common-dir) && ${plantInto('$d')}`],
      env: {},
    });
    expect(planted).toMatchObject({ exitCode: 0 });
    await h.client.completeRun(companyId, first.heartbeatRunId, { status: 'succeeded' });
    expect(readFileSync(join(repo, '.git', 'config'), 'utf8')).toContain('fsmonitor'); // the plant is in place
    expect(ran()).toEqual({});

    const second = runRequest({ companyId, workspace: worktree('wt-two') });
    const result = await h.client.startRunAndWaitReady(second);
    expect(result.executionTarget).toMatchObject({ kind: 'local', cwd: join(root, 'wt-two') });
    expect(readFileSync(join(root, 'wt-two', 'app.txt'), 'utf8')).toBe('v1'); // checked out, and through no filter
    expect(ran()).toEqual({});
    await h.client.completeRun(companyId, second.heartbeatRunId, { status: 'succeeded' });
  });

  it('ssh: git metadata written on the ssh host never reaches the host repository; changed files do', async () => {
    const repo = gitRepo(join(root, 'repo-ssh'));
    const gitDirBefore = readdirSync(join(repo, '.git'), { recursive: true }).map(String).sort();
    const configBefore = readFileSync(join(repo, '.git', 'config'), 'utf8');
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: {
        host: '127.0.0.1',
        port: sshd.port,
        username: sshd.username,
        remoteWorkspacePath: mkdtempSync(join(tmpdir(), 'envrun-remote-')),
        privateKeySecretRef: `env:${KEY_VAR}`,
        knownHosts: sshd.knownHosts,
      },
    });
    const agent = [
      plantInto('.git'),
      'echo changed > app.txt; echo new > new.txt',
      // A .git renamed away and a fresh one made; an upper-case one; a nested repository; a .git file pointing elsewhere.
      'cp -r .git gitcopy; mkdir -p .GIT && cp .git/config .GIT/config',
      'git init -q sub',
      plantInto('sub/.git'),
      'echo x > sub/file.txt',
      `mkdir -p other && printf 'gitdir: ${root}/elsewhere\\n' > other/.git && echo y > other/file.txt`,
    ].join('\n');
    const req = runRequest({
      companyId,
      cwd: repo,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: agent },
    });
    const result = await h.client.startRunAndWaitReady(req);
    expect(result.workspaceRealization).toMatchObject({ sync: { strategy: 'ssh_git_import_export' } });
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    const configAfterSync = readFileSync(join(repo, '.git', 'config'), 'utf8');
    const gitDirAfterSync = readdirSync(join(repo, '.git'), { recursive: true }).map(String).sort();

    // The user's next git commands, and the next run's upload (git ls-files here), run nothing.
    execFileSync('git', ['status', '--short'], { cwd: repo, env: userEnv });
    execFileSync('git', ['add', '-A'], { cwd: repo, env: userEnv });
    execFileSync('git', ['commit', '-qm', 'agent work'], { cwd: repo, env: userEnv });
    execFileSync('git', ['checkout', '-q', '-b', 'next'], { cwd: repo, env: userEnv });
    const again = runRequest({ companyId, cwd: repo, environmentId: env.id });
    await h.client.startRunAndWaitReady(again);
    await h.client.completeRun(companyId, again.heartbeatRunId, { status: 'succeeded' });
    expect(Object.entries(ran()).filter(([, where]) => where.includes(repo))).toEqual([]);

    // The work came back; nothing of git's did.
    expect(readFileSync(join(repo, 'app.txt'), 'utf8')).toBe('changed\n');
    expect(readFileSync(join(repo, 'new.txt'), 'utf8')).toBe('new\n');
    expect(readFileSync(join(repo, 'sub', 'file.txt'), 'utf8')).toBe('x\n');
    expect(readFileSync(join(repo, 'other', 'file.txt'), 'utf8')).toBe('y\n');
    expect(configAfterSync).toBe(configBefore);
    expect(gitDirAfterSync).toEqual(gitDirBefore);
    expect(['gitcopy', '.GIT', 'sub/.git', 'other/.git'].filter((path) => existsSync(join(repo, path)))).toEqual([]);
  });
});
