// ATTACK: a link whose text stays inside the workspace while the kernel's resolution does not. With
// `m -> .` in every folder, each `m/..` climbs one folder for the kernel and none for the text: at 20
// folders deep, `m/..` × 21 then `../` × 20 then a host path reads as a path inside the workspace, yet the
// kernel follows it to that host path. Such a link (and one that leads out through a link the target
// already has) must not come back: a root-only host file stays unreadable through the synced tree, in a
// direct copy, from a bubblewrap sandbox and from an ssh host.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeCopyBack } from '../../drivers/sync/safe-copy.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';
import { hasBwrap, openSandbox } from '../support/sandbox.js';
import { startSshd, type Sshd } from '../support/sshd.js';

const DEPTH = 20;
const dir = (prefix: string) => mkdtempSync(join(tmpdir(), `envrun-escape-${prefix}-`));
const deepDir = Array.from({ length: DEPTH }, () => 'd').join('/');
const ESCAPE = `${deepDir}/esc`;

/** A root-only file on the host (0600 in a 0700 folder): what the escaping link points at. */
function hostSecret(): string {
  const folder = dir('secret');
  chmodSync(folder, 0o700);
  const file = join(folder, 'secret.txt');
  writeFileSync(file, 'host secret', { mode: 0o600 });
  return file;
}

/** The link's text: inside the workspace for the text, out of it (to `hostFile`) for the kernel. */
const escapeText = (hostFile: string) => `${'m/../'.repeat(DEPTH + 1)}${'../'.repeat(DEPTH)}${hostFile.slice(1)}`;

/** The same plant as a shell script, run in the workspace by agent code. */
const plantScript = (hostFile: string) =>
  [
    'set -e',
    'ln -s . m',
    'p=.',
    `for i in $(seq ${DEPTH}); do p=$p/d; mkdir $p; ln -s . $p/m; done`,
    `ln -s '${escapeText(hostFile)}' $p/esc`,
    'echo work > work.txt',
  ].join('\n');

/** Every path under `root`, relative, never through a link (a recursive readdir follows `m -> .` again and again). */
function walk(root: string, rel = ''): string[] {
  return readdirSync(join(root, rel)).flatMap((name) => {
    const path = rel ? `${rel}/${name}` : name;
    return lstatSync(join(root, path)).isDirectory() ? [path, ...walk(root, path)] : [path];
  });
}

/** Every symlink under `root`, relative, with where the kernel takes it (null when it leads nowhere). */
function linksIn(root: string): Array<{ path: string; resolved: string | null }> {
  const real = realpathSync.native(root);
  return walk(root)
    .filter((p) => lstatSync(join(root, p)).isSymbolicLink())
    .map((path) => {
      let resolved: string | null = null;
      try {
        resolved = realpathSync.native(join(root, path)); // the kernel's (the JS one joins `m/..` by text)
      } catch {
        /* dangling */
      }
      return { path, resolved: resolved === null ? null : relative(real, resolved) };
    });
}

/** No link in `root` leads out of it; the escape and the secret are not reachable through it. */
function expectContained(root: string, hostFile: string): void {
  const escaping = linksIn(root).filter(
    (l) => l.resolved !== null && (l.resolved.startsWith('..') || l.resolved.startsWith('/')),
  );
  expect(escaping).toEqual([]);
  expect(() => readFileSync(join(root, ESCAPE), 'utf8')).toThrow();
  expect(readFileSync(hostFile, 'utf8')).toBe('host secret'); // the file is there: only the link is not
}

describe('a link that only looks contained', () => {
  it('the escape is real: on the source, the kernel resolves it to the host file', () => {
    const hostFile = hostSecret();
    const from = dir('from');
    execFileSync('bash', ['-c', plantScript(hostFile)], { cwd: from });
    expect(readlinkSync(join(from, ESCAPE))).toBe(escapeText(hostFile));
    expect(readFileSync(join(from, ESCAPE), 'utf8')).toBe('host secret');
  });

  it('is not synced back by safeCopyBack: dropped and reported; the links that stay inside are kept', async () => {
    const hostFile = hostSecret();
    const from = dir('from');
    const to = dir('to');
    execFileSync('bash', ['-c', plantScript(hostFile)], { cwd: from });
    const result = await safeCopyBack(from, to);
    expectContained(to, hostFile);
    expect(result.skipped).toContainEqual({ path: ESCAPE, reason: 'symlink leading out of the workspace' });
    expect(readlinkSync(join(to, deepDir, 'm'))).toBe('.');
    expect(readFileSync(join(to, 'work.txt'), 'utf8')).toBe('work\n');
  });

  it('a link leading out through a link the target already has is not synced back either', async () => {
    const hostFile = hostSecret();
    const from = dir('from');
    const to = dir('to');
    symlinkSync(join(hostFile, '..'), join(to, 'shared')); // the user's own link to a folder beside the workspace
    mkdirSync(join(from, 'sub'));
    symlinkSync('../shared/secret.txt', join(from, 'sub', 'via-shared'));
    const result = await safeCopyBack(from, to);
    expect(() => lstatSync(join(to, 'sub', 'via-shared'))).toThrow();
    expect(result.skipped).toContainEqual({ path: 'sub/via-shared', reason: 'symlink leading out of the workspace' });
  });
});

describe('links judged by where the kernel takes them (after the fix)', () => {
  it('ordinary links come back as they are: dependency folders, bins, `m -> .`, a dangling one', async () => {
    const from = dir('from');
    const to = dir('to');
    mkdirSync(join(from, 'node_modules/.pnpm/foo@1/node_modules/foo/bin'), { recursive: true });
    writeFileSync(join(from, 'node_modules/.pnpm/foo@1/node_modules/foo/bin/foo.js'), 'x');
    symlinkSync('.pnpm/foo@1/node_modules/foo', join(from, 'node_modules/foo'));
    mkdirSync(join(from, 'node_modules/.bin'));
    symlinkSync('../foo/bin/foo.js', join(from, 'node_modules/.bin/foo'));
    symlinkSync('./node_modules/.bin/foo', join(from, 'run-foo'));
    symlinkSync('.', join(from, 'm'));
    symlinkSync('m/m/m/run-foo', join(from, 'through-m'));
    symlinkSync('not/there/yet', join(from, 'dangling'));
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([]);
    expect(readFileSync(join(to, 'through-m'), 'utf8')).toBe('x');
    expect(readlinkSync(join(to, 'dangling'))).toBe('not/there/yet');
  });

  it('loops, text that climbs out of a folder it names, and links into .git through another link are dropped', async () => {
    const from = dir('from');
    const to = dir('to');
    execFileSync('git', ['init', '-q', to]);
    symlinkSync('.git', join(to, 'git-dir')); // the user's own link
    writeFileSync(join(from, 'a.txt'), 'a');
    mkdirSync(join(from, 'sub'));
    symlinkSync('l2', join(from, 'l1'));
    symlinkSync('l1', join(from, 'l2'));
    symlinkSync('sub/../a.txt', join(from, 'climbs'));
    symlinkSync('git-dir/config', join(from, 'config-link'));
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([
      { path: 'climbs', reason: 'symlink climbing out of a folder it names (x/..)' },
      { path: 'config-link', reason: 'symlink leading into git metadata' },
      { path: 'l1', reason: 'symlink loop or chain of more than 40 links' },
      { path: 'l2', reason: 'symlink loop or chain of more than 40 links' },
    ]);
    expect(readFileSync(join(to, 'a.txt'), 'utf8')).toBe('a');
  });

  it('a link replacing one of the target is judged by both: what the target held, and what is written', async () => {
    const hostFile = hostSecret();
    const from = dir('from');
    const to = dir('to');
    symlinkSync(join(hostFile, '..'), join(to, 's')); // the user's link out of the workspace
    mkdirSync(join(from, 'sub'));
    writeFileSync(join(from, 'sub', 'secret.txt'), 'mine');
    symlinkSync('sub', join(from, 's')); // replaces it…
    symlinkSync('s/secret.txt', join(from, 'y')); // …but until it does, `y` would lead out
    const result = await safeCopyBack(from, to);
    expect(result.skipped).toEqual([{ path: 'y', reason: 'symlink leading out of the workspace' }]);
    expect(readlinkSync(join(to, 's'))).toBe('sub');
    expect(readFileSync(join(to, 's', 'secret.txt'), 'utf8')).toBe('mine');
  });

  it('a folder that replaces a link of the target: links through it are judged by what it holds', async () => {
    const from = dir('from');
    const to = dir('to');
    symlinkSync('/etc', join(to, 'conf')); // the user's link, replaced by the agent's folder
    mkdirSync(join(from, 'conf'));
    writeFileSync(join(from, 'conf', 'app.ini'), 'x');
    symlinkSync('conf/app.ini', join(from, 'app.ini'));
    const result = await safeCopyBack(from, to);
    // Until the folder replaces the link, `app.ini` would lead into /etc: it does not come back.
    expect(result.skipped).toEqual([{ path: 'app.ini', reason: 'symlink leading out of the workspace' }]);
    expect(lstatSync(join(to, 'conf')).isDirectory()).toBe(true);
  });
});

describe.runIf(hasBwrap())('a link that only looks contained, from a bubblewrap sandbox', () => {
  it('is not brought back by release; the root-only host file is not readable through the synced tree', async () => {
    const hostFile = hostSecret();
    const box = await openSandbox();
    const planted = await box.sh(plantScript(hostFile));
    expect(planted.exitCode, planted.stderr).toBe(0);
    await box.closeWithSyncBack();
    expect(readFileSync(join(box.local, 'work.txt'), 'utf8')).toBe('work\n');
    expectContained(box.local, hostFile);
  });
});

describe('a link that only looks contained, from an ssh host', () => {
  let h: Harness;
  let sshd: Sshd;
  const KEY_VAR = 'ENVRUN_TEST_ESCAPE_KEY';
  beforeAll(async () => {
    sshd = await startSshd(dir('sshd'));
    process.env[KEY_VAR] = sshd.privateKey;
    h = await createHarness();
  });
  afterAll(async () => {
    await h?.close();
    await sshd?.stop();
  });

  it('is not brought back by the sync-back of a run', async () => {
    const hostFile = hostSecret();
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'ssh',
      driver: 'ssh',
      config: {
        host: '127.0.0.1',
        port: sshd.port,
        username: sshd.username,
        remoteWorkspacePath: dir('remote'),
        privateKeySecretRef: `env:${KEY_VAR}`,
        knownHosts: sshd.knownHosts,
      },
    });
    const cwd = tempWorkspace();
    const req = runRequest({
      companyId,
      cwd,
      environmentId: env.id,
      runtimeOverlay: { provisionCommand: plantScript(hostFile) },
    });
    await h.client.startRunAndWaitReady(req);
    await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    expect(readFileSync(join(cwd, 'work.txt'), 'utf8')).toBe('work\n');
    expectContained(cwd, hostFile);
  });
});
