// ATTACK (issue 18, items 1 and 6): the release race, and an agent that fails its own release.
//
// A command in the sandbox is still running when the run is completed. It keeps swapping folders of its
// workspace for symlinks to a root-only 0700 host folder (renameat2(RENAME_EXCHANGE) in a loop, from perl:
// no compiler needed inside), while the worker, as root, syncs the workspace back and deletes the lease's
// folder. A path-based walk (`rm -r`) that lstats a folder, then reads and deletes inside it by path,
// follows the swapped link and deletes the host folder's files. Variants: with and without sync-back,
// from a running `exec`, and from a process left behind (setsid + nohup, started by a command that then
// exits). Every attempt gets a fresh host folder of 20 files, and every attempt must leave them all.
//
// An agent that tries to fail its release leaves mode-000 folders, 10,000-deep nesting, many files and
// names with newlines, and keeps churning folders while the run is completed: release must succeed, the
// lease's folder must be gone and the lease must say what happened.
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ExecResult } from '../../contracts/index.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace, until } from '../support/runs.js';
import { hasBwrap, hostProcessesWith, isRoot } from '../support/sandbox.js';

/** Attempts per variant: each a full run (start, exec, complete), with a fresh host folder. */
const ATTEMPTS = 20;
/** Attempts for the left-behind variant (its racer must first outlive its command). */
const LEFT_BEHIND_ATTEMPTS = 10;
const SECRET_FILES = 20;

/**
 * The racer, inside the sandbox: PAIRS folders (20 files each, so a walk spends time in them) beside PAIRS
 * links to the host folder, exchanged in a loop. A side that a walk deleted is put back as a link; once
 * the workspace is gone (nothing can be made in it) or after SECONDS, it stops.
 */
const RACER = String.raw`
use strict; use warnings;
my ($target, $pairs, $seconds) = @ARGV;
chdir '/workspace' or die "chdir: $!";
mkdir 'race' or die "mkdir: $!";
chdir 'race' or die "chdir: $!";
for my $i (0 .. $pairs - 1) {
  mkdir "d$i" or die "mkdir d$i: $!";
  for my $j (0 .. 19) { open(my $f, '>', "d$i/f$j") or die "open: $!"; print $f "x"; close $f; }
  symlink($target, "l$i") or die "symlink: $!";
}
open(my $m, '>', '/workspace/racing') or die "marker: $!"; close $m;
my $end = time + $seconds;
my $gone = 0;
while (time < $end && !$gone) {
  for my $i (0 .. $pairs - 1) {
    my ($a, $b) = ("d$i", "l$i");
    next if syscall(316, -100, $a, -100, $b, 2) == 0; # renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
    for my $n ($a, $b) {
      next if -l $n || -e $n;
      $gone = 1 if !symlink($target, $n) && $!{ENOENT};
    }
  }
}
`;

/** Starts the racer in the background (setsid, nohup) and exits once it is racing. */
const LEAVE_BEHIND =
  'prog=$1; shift; setsid nohup perl -e "$prog" "$@" > /dev/null 2>&1 < /dev/null & ' +
  'for i in $(seq 200); do [ -e /workspace/racing ] && exit 0; sleep 0.05; done; exit 3';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

/** A root-only 0700 host folder holding SECRET_FILES files. */
function secretFolder(): { path: string; left: () => number } {
  const path = join(inject('tmpRoot'), uniqueId('root-only'));
  mkdirSync(path, { mode: 0o700 });
  chmodSync(path, 0o700);
  for (let i = 0; i < SECRET_FILES; i++) writeFileSync(join(path, `secret-${i}`), `secret ${i}\n`, { mode: 0o600 });
  return { path, left: () => (existsSync(path) ? readdirSync(path).length : 0) };
}

interface Attempt {
  secretFilesLeft: number;
  runError: string | null;
  status: string | undefined;
  cleanupStatus: string | null | undefined;
  leaseFolderLeft: boolean;
}
const INTACT = {
  secretFilesLeft: SECRET_FILES,
  runError: null,
  status: 'released',
  cleanupStatus: 'success',
  leaseFolderLeft: false,
};

async function bubblewrapEnvironment(companyId: string, config: Record<string, unknown> = {}) {
  return h.admin.createEnvironment({
    companyId,
    name: 'bwrap',
    driver: 'sandbox',
    config: { provider: 'bubblewrap', ...config },
  });
}

/** One run: the racer starts (in a running exec, or left behind), the run is completed, the damage counted. */
async function attempt(variant: { syncBack: boolean; leftBehind: boolean }): Promise<Attempt> {
  const companyId = uniqueId('co');
  const env = await bubblewrapEnvironment(companyId, variant.syncBack ? {} : { discardChanges: true });
  const secret = secretFolder();
  const req = runRequest({ companyId, cwd: tempWorkspace(), environmentId: env.id });
  const ready = await h.client.startRunAndWaitReady(req);
  const root = String((ready.lease.metadata?.provider as { root: string }).root);
  const racerArgs = [secret.path, '8', '20'];
  let exec: Promise<ExecResult | Error>;
  if (variant.leftBehind) {
    const started = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'bash',
      args: ['-c', LEAVE_BEHIND, 'racer', RACER, ...racerArgs],
      timeoutMs: 30_000,
    });
    expect(started.exitCode, started.stderr).toBe(0);
    exec = Promise.resolve(started);
  } else {
    exec = h.admin
      .exec(companyId, req.heartbeatRunId, { command: 'perl', args: ['-e', RACER, ...racerArgs], timeoutMs: 60_000 })
      .catch((err: Error) => err);
    await until('the racer to start', async () => existsSync(join(root, 'workspace', 'racing')));
  }
  const after = await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
  const secretFilesLeft = secret.left();
  const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
  const result: Attempt = {
    secretFilesLeft,
    runError: after.error?.code ?? null,
    status: lease?.status,
    cleanupStatus: lease?.cleanupStatus,
    leaseFolderLeft: existsSync(root),
  };
  await exec; // the racer is done (ended by the release, or it stopped once the workspace was gone)
  await until('the racer to be gone from the host', async () => hostProcessesWith(secret.path).length === 0, 30_000);
  return result;
}

describe.runIf(isRoot() && hasBwrap() && existsSync('/usr/bin/perl'))('the release race', () => {
  it(`a running exec swapping folders for links to a root-only folder, with sync-back: ${ATTEMPTS} attempts, the folder intact after each`, async () => {
    const results: Attempt[] = [];
    for (let i = 0; i < ATTEMPTS; i++) results.push(await attempt({ syncBack: true, leftBehind: false }));
    expect(results).toEqual(results.map(() => INTACT));
  }, 900_000);

  it(`the same without sync-back (discardChanges): ${ATTEMPTS} attempts, the folder intact after each`, async () => {
    const results: Attempt[] = [];
    for (let i = 0; i < ATTEMPTS; i++) results.push(await attempt({ syncBack: false, leftBehind: false }));
    expect(results).toEqual(results.map(() => INTACT));
  }, 900_000);

  it(`from a process left behind (setsid, nohup) by a command that exits: ${LEFT_BEHIND_ATTEMPTS} attempts`, async () => {
    const results: Attempt[] = [];
    for (let i = 0; i < LEFT_BEHIND_ATTEMPTS; i++) results.push(await attempt({ syncBack: true, leftBehind: true }));
    expect(results).toEqual(results.map(() => INTACT));
  }, 900_000);
});

/** The workspace an agent leaves to fail its release: deep, locked, crowded, oddly named. */
const HOSTILE_TREE = String.raw`
use strict; use warnings;
chdir '/workspace' or die "chdir: $!";
mkdir 'deep' or die; chdir 'deep' or die;
for my $i (1 .. 10000) { mkdir 'd' or die "mkdir at $i: $!"; chdir 'd' or die "chdir at $i: $!"; }
for my $i (reverse 1 .. 10000) { chdir '..' or die "up at $i: $!"; chmod(0, 'd') if $i % 500 == 0; }
chdir '/workspace' or die;
mkdir 'many' or die;
for my $i (1 .. 20000) { open(my $f, '>', "many/f$i") or die "many: $!"; close $f; }
mkdir "new\nline" or die;
open(my $f, '>', "new\nline/file\nname") or die; print $f "nl\n"; close $f;
mkdir 'locked' or die; mkdir 'locked/inner' or die;
open($f, '>', 'locked/inner/kept') or die; print $f "locked\n"; close $f;
chmod(0, 'locked/inner') or die; chmod(0, 'locked') or die;
system('mkfifo', 'pipe') == 0 or die 'mkfifo';
print "built\n";
`;

/** Keeps making locked folders, renaming them and swapping in links while the run is completed. */
const CHURN = String.raw`
use strict; use warnings;
chdir '/workspace' or die;
my $end = time + 40; my $n = 0;
while (time < $end) {
  my $d = "churn$n";
  last unless mkdir $d;
  open(my $f, '>', "$d/f"); close $f if $f;
  chmod(0, $d);
  rename($d, "moved$n");
  symlink('/', "link$n");
  syscall(316, -100, "moved$n", -100, "link$n", 2);
  $n++;
}
`;

describe.runIf(isRoot() && hasBwrap() && existsSync('/usr/bin/perl'))('an agent that tries to fail its release', () => {
  it('mode-000 folders, 10,000-deep nesting, 20,000 files, newline names and a churn while releasing: release succeeds', async () => {
    const companyId = uniqueId('co');
    const env = await bubblewrapEnvironment(companyId);
    const req = runRequest({ companyId, cwd: tempWorkspace(), environmentId: env.id });
    const ready = await h.client.startRunAndWaitReady(req);
    const root = String((ready.lease.metadata?.provider as { root: string }).root);
    const built = await h.admin.exec(companyId, req.heartbeatRunId, {
      command: 'perl',
      args: ['-e', HOSTILE_TREE],
      timeoutMs: 300_000,
    });
    expect(built.exitCode, built.stderr).toBe(0);
    const marker = `churn-${uniqueId('m')}`;
    const churnStarted = Date.now();
    const churn = h.admin
      .exec(companyId, req.heartbeatRunId, { command: 'perl', args: ['-e', CHURN, marker], timeoutMs: 60_000 })
      .then(
        (result) => ({ result, at: Date.now() }),
        (err: Error) => ({ result: err, at: Date.now() }),
      );
    await until('the churn to start', async () => existsSync(join(root, 'workspace', 'moved5')));

    const after = await h.client.completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' });
    expect(after.error).toBeNull();
    const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
    expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
    expect(existsSync(root)).toBe(false);
    // What could not come back is on the lease: the nesting is deeper than a sync-back goes.
    const syncBack = lease!.metadata?.syncBack as Record<string, unknown> | undefined;
    expect(syncBack, JSON.stringify(lease!.metadata)).toBeDefined();
    expect(JSON.stringify(syncBack)).toMatch(/deep|depth/i);
    // The churn was ended by the release, not by its own 40 s.
    const ended = await churn;
    expect(ended.at - churnStarted).toBeLessThan(30_000);
    expect(String(ended.result)).toMatch(/the command was ended: the run is releasing its lease/);
    expect(hostProcessesWith(marker)).toEqual([]);
  }, 600_000);
});
