// ATTACKS on the ssh driver's sync-back (the remote workspace is the agent's: everything in it is hostile),
// through real runs on a real sshd (which here is this same machine, as root):
//  - a symlink left by one run redirects the next sync-back's writes out of the workspace;
//  - a FIFO or a device node in the workspace (a FIFO once wedged a copy; a device node, made as root, came
//    back as a usable device in the user's folder);
//  - setuid/setgid and world-writable files come back with those bits (tar as root keeps modes and owners);
//  - an archive bigger than ENVRUN_MAX_WORKSPACE_BYTES is refused with nothing written;
//  - the upload holds no whole archive in memory.
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';
import { directSsh } from '../support/ssh-direct.js';
import { startSshd, type Sshd } from '../support/sshd.js';

let h: Harness;
let sshd: Sshd;
const KEY_VAR = 'ENVRUN_TEST_SYNC_KEY';
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

beforeAll(async () => {
  sshd = await startSshd(mkdtempSync(join(tmpdir(), 'envrun-sshd-')));
  process.env[KEY_VAR] = sshd.privateKey;
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
  await sshd?.stop();
});

const sshConfig = () => ({
  host: '127.0.0.1',
  port: sshd.port,
  username: sshd.username,
  remoteWorkspacePath: mkdtempSync(join(tmpdir(), 'envrun-remote-')),
  privateKeySecretRef: `env:${KEY_VAR}`,
  knownHosts: sshd.knownHosts,
});

/** One complete ssh run of `cwd` whose agent runs `agent` on the ssh host; returns the lease as stored. */
async function sshRun(companyId: string, environmentId: string, cwd: string, agent: string) {
  const req = runRequest({ companyId, cwd, environmentId, runtimeOverlay: { provisionCommand: agent } });
  const ready = await h.client.startRunAndWaitReady(req);
  await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
  return { lease: lease!, remoteCwd: (ready.executionTarget as { remoteCwd: string }).remoteCwd };
}

function gitRepo(dir: string): string {
  const env = {
    PATH: process.env.PATH!,
    HOME: dir,
    GIT_AUTHOR_NAME: 't',
    GIT_AUTHOR_EMAIL: 't@t',
    GIT_COMMITTER_NAME: 't',
    GIT_COMMITTER_EMAIL: 't@t',
  };
  execFileSync('git', ['init', '-q', '-b', 'main'], { cwd: dir, env });
  writeFileSync(join(dir, 'app.txt'), 'v1');
  execFileSync('git', ['add', '.'], { cwd: dir, env });
  execFileSync('git', ['commit', '-qm', 'init'], { cwd: dir, env });
  return dir;
}

describe('ssh sync-back trusts nothing in the remote workspace', () => {
  // A git workspace is the sharper case: its archives list files, not their folders, so tar used to open
  // `link/pwned.txt` through whatever `link` was in the local workspace.
  it.each(['git', 'plain'])(
    'a symlink left by one run is not written through by the next sync-back (%s workspace)',
    async (kind) => {
      const companyId = uniqueId('co');
      const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
      const outside = mkdtempSync(join(tmpdir(), 'envrun-host-target-'));
      const cwd = kind === 'git' ? gitRepo(tempWorkspace()) : tempWorkspace();
      writeFileSync(join(cwd, 'keep.txt'), 'mine');
      // Run 1 leaves a link to a host folder; run 2 makes the same name a folder with a file in it.
      await sshRun(
        companyId,
        env.id,
        cwd,
        `ln -s ${outside} link; ln -s /etc/passwd passwd-link; ln -s keep.txt inner-link`,
      );
      const linksAfterRun1 = ['link', 'passwd-link'].filter((name) => existsSync(join(cwd, name)));
      await sshRun(companyId, env.id, cwd, 'rm -f link && mkdir link && echo pwned > link/pwned.txt');
      expect(readdirSync(outside)).toEqual([]);
      expect(linksAfterRun1).toEqual([]); // a link out of the workspace never comes back
      expect(lstatSync(join(cwd, 'inner-link')).isSymbolicLink()).toBe(true); // one inside it does
      expect(readFileSync(join(cwd, 'link', 'pwned.txt'), 'utf8')).toBe('pwned\n');
    },
  );

  it.each(['git', 'plain'])(
    'a symlink already in the local workspace (planted before this version) is replaced, never written through (%s workspace)',
    async (kind) => {
      const companyId = uniqueId('co');
      const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
      const outside = mkdtempSync(join(tmpdir(), 'envrun-host-target-'));
      writeFileSync(join(outside, 'victim.txt'), 'original');
      const cwd = kind === 'git' ? gitRepo(tempWorkspace()) : tempWorkspace();
      symlinkSync(outside, join(cwd, 'link'));
      symlinkSync(join(outside, 'victim.txt'), join(cwd, 'file-link'));
      const { lease } = await sshRun(
        companyId,
        env.id,
        cwd,
        'rm -f link file-link && mkdir link && echo pwned > link/pwned.txt && echo pwned > link/victim.txt && echo pwned > file-link',
      );
      expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
      expect(readdirSync(outside)).toEqual(['victim.txt']);
      expect(readFileSync(join(outside, 'victim.txt'), 'utf8')).toBe('original');
      expect(lstatSync(join(cwd, 'link')).isDirectory()).toBe(true);
      expect(readFileSync(join(cwd, 'file-link'), 'utf8')).toBe('pwned\n');
    },
  );

  it('a FIFO or a device node in the workspace does not stop release and does not come back', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
    const cwd = tempWorkspace();
    const { lease, remoteCwd } = await sshRun(
      companyId,
      env.id,
      cwd,
      'mkfifo fifo; mkdir -p deep && mkfifo deep/fifo; (mknod null c 1 3 && chmod 666 null) 2>/dev/null; echo ok > normal.txt',
    );
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    expect(existsSync(remoteCwd)).toBe(false);
    expect(readFileSync(join(cwd, 'normal.txt'), 'utf8')).toBe('ok\n');
    expect(['fifo', 'deep/fifo', 'null'].filter((name) => existsSync(join(cwd, name)))).toEqual([]);
  });

  it('setuid, setgid and world-writable files come back without those bits', async () => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({ companyId, name: 'ssh', driver: 'ssh', config: sshConfig() });
    const cwd = tempWorkspace();
    await sshRun(
      companyId,
      env.id,
      cwd,
      'cp /bin/true suid && chmod 4755 suid; cp /bin/true sgid && chmod 2755 sgid; echo x > world && chmod 666 world; mkdir sticky && chmod 1777 sticky && echo y > sticky/f',
    );
    const mode = (name: string) => lstatSync(join(cwd, name)).mode & 0o7777;
    expect(mode('suid')).toBe(0o755);
    expect(mode('sgid')).toBe(0o755);
    expect(mode('world')).toBe(0o644);
    expect(mode('sticky')).toBe(0o755);
    expect(readFileSync(join(cwd, 'sticky', 'f'), 'utf8')).toBe('y\n');
  });
});

describe('ssh sync-back limits', () => {
  const remoteRoot = mkdtempSync(join(tmpdir(), 'envrun-remote-'));

  it('over ENVRUN_MAX_WORKSPACE_BYTES: release fails plainly, nothing is written into the local workspace, the remote copy stays', async () => {
    const ssh = directSsh(sshd, KEY_VAR, remoteRoot);
    const cwd = tempWorkspace();
    writeFileSync(join(cwd, 'mine.txt'), 'mine');
    const run = await ssh.start(
      cwd,
      'echo changed > mine.txt; head -c 3000000 /dev/urandom > big.bin; echo small > small.txt',
    );
    process.env.ENVRUN_MAX_WORKSPACE_BYTES = '1000000';
    try {
      await expect(run.release()).rejects.toThrow(
        `sync back to ${cwd} failed: the workspace sent more than the limit of 1000000 bytes (ENVRUN_MAX_WORKSPACE_BYTES); nothing was written into it`,
      );
    } finally {
      delete process.env.ENVRUN_MAX_WORKSPACE_BYTES;
    }
    expect(readdirSync(cwd)).toEqual(['mine.txt']);
    expect(readFileSync(join(cwd, 'mine.txt'), 'utf8')).toBe('mine');
    expect(existsSync(join(run.remoteCwd, 'big.bin'))).toBe(true);
    await run.release(); // under the default limit it goes through
    expect(readFileSync(join(cwd, 'mine.txt'), 'utf8')).toBe('changed\n');
    expect(existsSync(run.remoteCwd)).toBe(false);
  });

  it('reports what it skipped', async () => {
    const ssh = directSsh(sshd, KEY_VAR, remoteRoot);
    const cwd = tempWorkspace();
    const run = await ssh.start(
      cwd,
      'mkfifo fifo; ln -s /etc escape; mkdir -p .git && echo x > .git/config; echo ok > ok.txt',
    );
    await run.release();
    expect(run.progress.at(-1)).toMatch(
      /^synced back into .+: 1 written, 0 unchanged, 3 bytes; skipped 3: \.git \(git metadata is never synced back\), escape \(symlink leading out of the workspace\), fifo \(fifo\)$/,
    );
  });

  // Streamed, the growth is allocation churn (64 KiB chunks awaiting a GC): 15–40 MiB here; holding the
  // archive, it was 260–320 MiB.
  it('the upload streams: uploading (and syncing back) 150 MB grows the worker by far less', async () => {
    const ssh = directSsh(sshd, KEY_VAR, remoteRoot);
    const cwd = tempWorkspace();
    execFileSync('sh', ['-c', 'head -c 150000000 /dev/urandom > big.bin'], { cwd });
    gc();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    try {
      const run = await ssh.start(cwd, null);
      expect(lstatSync(join(run.remoteCwd, 'big.bin')).size).toBe(150_000_000);
      await run.release();
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    console.log(`upload + sync-back of 150 MB: RSS grew ${((peak - before) / 1024 ** 2).toFixed(1)} MiB at the peak`);
    expect(peak - before).toBeLessThan(64 * 1024 ** 2);
  });

  it('a plain (not git) workspace: a repository the agent makes in it comes back without its .git', async () => {
    const ssh = directSsh(sshd, KEY_VAR, remoteRoot);
    const cwd = tempWorkspace();
    const run = await ssh.start(
      cwd,
      'git init -q sub && git config --file sub/.git/config core.fsmonitor "touch /tmp/never" && echo x > sub/file.txt',
    );
    expect(run.record.sync.strategy).toBe('ssh_archive_upload_download');
    await run.release();
    expect(readFileSync(join(cwd, 'sub', 'file.txt'), 'utf8')).toBe('x\n');
    expect(existsSync(join(cwd, 'sub', '.git'))).toBe(false);
  });
});
