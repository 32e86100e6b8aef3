// Release ends the lease's processes before anything else, through the provider alone: every sandbox
// started on the lease's folder is recorded (outside that folder) before its command runs, so a release
// by a worker that restarted meanwhile still finds and kills them; a folder kept for reuse loses only the
// releasing run's sandboxes; no command starts once the release began; and a process a command leaves
// behind does not outlive it.
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import type { ExecResult } from '../../contracts/index.js';
import { createBubblewrapProvider } from '../../drivers/providers/bubblewrap/index.js';
import { LeaseClosedError, createProcessTracker } from '../../drivers/providers/bubblewrap/processes.js';
import { callContext, hasBwrap, hostProcessesWith, isRoot } from '../support/sandbox.js';
import { until } from '../support/runs.js';

const ctx = (run: string) => ({ ...callContext(run), environmentId: 'env-release' });
/** The context of a call on the lease `id` (as its row stores it) for `run`. */
const on = (run: string, id: string) => ({
  ...ctx(run),
  lease: { providerLeaseId: id, metadata: {}, expiresAt: null },
});

/** Two provider instances over one root: the worker before and after a restart. */
async function providers() {
  const rootDir = join(inject('tmpRoot'), `sandboxes-${randomUUID().slice(0, 8)}`);
  mkdirSync(rootDir, { recursive: true, mode: 0o755 });
  const before = createBubblewrapProvider({ rootDir });
  const after = createBubblewrapProvider({ rootDir });
  const { config } = await before.validateConfig({ provider: 'bubblewrap' });
  return { before, after, config };
}

type Providers = Awaited<ReturnType<typeof providers>>;

async function leaseOn(p: Providers, reuseKey: string | null = null) {
  const lease = await p.before.acquireLease(p.config, { ...ctx('run-a'), idempotencyKey: randomUUID(), reuseKey });
  const local = mkdtempSync(join(tmpdir(), 'envrun-release-local-'));
  await p.before.realizeWorkspace(p.config, { ...ctx('run-a'), lease, localPath: local });
  return { id: lease.providerLeaseId, root: String(lease.metadata.root), local };
}

/** A command that sleeps long, marked so the host can find it; settles with its result or error. */
function sleeper(p: Providers, id: string, run: string, marker: string): Promise<ExecResult | Error> {
  return p.before
    .execute(p.config, on(run, id), {
      command: 'bash',
      args: ['-c', `exec -a ${marker} sleep 300`],
      env: {},
      timeoutMs: 120_000,
    })
    .catch((err: Error) => err);
}

/** `sleep` as the init of a pid namespace of its own (unshare, as root): its host pid, and whether it ended. */
function inNamespace(): { init: Promise<number>; ended: Promise<boolean> } {
  const child = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sleep', '120'], { stdio: 'ignore' });
  const ended = new Promise<boolean>((resolve) => child.on('exit', () => resolve(true)));
  const init = until('the namespace to be made', async () => {
    const children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
    return children ? Number(children.split(' ')[0]) : null;
  });
  return { init, ended };
}

/** Host pids of the marked command itself (its argv[0]: bwrap's own arguments name the marker too). */
const commandsWith = (marker: string) =>
  hostProcessesWith(marker).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(`${marker}\0`);
    } catch {
      return false;
    }
  });
const running = (marker: string) => until(`${marker} to run`, async () => commandsWith(marker).length > 0);

describe.runIf(hasBwrap() && isRoot())('bubblewrap release: the lease processes end first', () => {
  it('a release by a restarted worker finds every sandbox of the lease by its record and kills it', async () => {
    const p = await providers();
    const lease = await leaseOn(p);
    const markers = [`release-a-${randomUUID()}`, `release-b-${randomUUID()}`];
    const commands = markers.map((m) => sleeper(p, lease.id, 'run-a', m));
    await Promise.all(markers.map(running));
    const started = Date.now();
    expect(
      await p.after.releaseLease(p.config, {
        ...on('run-a', lease.id),
        keep: false,
        cancelActiveWork: true,
        syncBackTo: null,
      }),
    ).toEqual({ receipt: { providerLeaseId: lease.id, state: 'destroyed' } });
    for (const m of markers) expect(commandsWith(m)).toEqual([]);
    expect(existsSync(lease.root)).toBe(false);
    // bwrap reports its namespace killed by SIGKILL as 128 + 9.
    for (const result of await Promise.all(commands)) expect(result).toMatchObject({ exitCode: 137 });
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it("a folder kept for reuse loses only the releasing run's sandboxes", async () => {
    const p = await providers();
    const lease = await leaseOn(p, `env-${randomUUID().slice(0, 8)}`);
    const mine = `release-mine-${randomUUID()}`;
    const theirs = `release-theirs-${randomUUID()}`;
    const myCommand = sleeper(p, lease.id, 'run-a', mine);
    const theirCommand = sleeper(p, lease.id, 'run-b', theirs);
    await Promise.all([running(mine), running(theirs)]);
    // Kept: this run's sandboxes are stopped, the folder stays.
    expect(
      await p.after.releaseLease(p.config, {
        ...on('run-a', lease.id),
        keep: true,
        cancelActiveWork: true,
        syncBackTo: null,
      }),
    ).toEqual({ receipt: { providerLeaseId: lease.id, state: 'stopped' } });
    expect(commandsWith(mine)).toEqual([]);
    expect(commandsWith(theirs)).not.toEqual([]);
    expect(await myCommand).toMatchObject({ exitCode: 137 });
    await p.after.releaseLease(p.config, {
      ...on('run-b', lease.id),
      keep: false,
      cancelActiveWork: true,
      syncBackTo: null,
    });
    expect(commandsWith(theirs)).toEqual([]);
    expect(await theirCommand).toMatchObject({ exitCode: 137 });
  });

  it('no command starts on a lease whose release began, until the folder is made again', async () => {
    const processDir = join(inject('tmpRoot'), `processes-${randomUUID().slice(0, 8)}`);
    const tracker = createProcessTracker(processDir);
    const first = inNamespace();
    await tracker.record('lease-1', 'run-a', await first.init);
    expect(await tracker.killAll('lease-1')).toBe(1);
    expect(await first.ended).toBe(true);
    // The release began: a sandbox that starts now is killed before its command runs, and refused.
    const late = inNamespace();
    await expect(tracker.record('lease-1', 'run-a', await late.init)).rejects.toBeInstanceOf(LeaseClosedError);
    expect(await late.ended).toBe(true);
    await tracker.reopen('lease-1');
    const again = inNamespace();
    const ended = await tracker.record('lease-1', 'run-b', await again.init);
    expect(readdirSync(join(processDir, 'lease-1'))).toHaveLength(1);
    await ended(); // the command is over: its namespace is ended and the record goes
    expect(await again.ended).toBe(true);
    expect(readdirSync(join(processDir, 'lease-1'))).toEqual([]);
  });

  it('a stale record (its pid now names another process) kills nothing', async () => {
    const processDir = join(inject('tmpRoot'), `processes-${randomUUID().slice(0, 8)}`);
    const tracker = createProcessTracker(processDir);
    const bystander = spawn('sleep', ['60'], { stdio: 'ignore' });
    mkdirSync(join(processDir, 'lease-1'), { recursive: true });
    // A record left by a worker that died: same pid, another start time.
    writeFileSync(join(processDir, 'lease-1', `${bystander.pid}-1`), JSON.stringify({ ns: 'pid:[1]', run: 'run-a' }));
    expect(await tracker.killAll('lease-1')).toBe(0);
    expect(bystander.exitCode).toBeNull();
    expect(bystander.kill()).toBe(true);
  });

  it('a process left behind (setsid, nohup, &) ends with its command', async () => {
    const p = await providers();
    const lease = await leaseOn(p);
    const marker = `left-behind-${randomUUID()}`;
    const result = await p.before.execute(p.config, on('run-a', lease.id), {
      command: 'bash',
      args: [
        '-c',
        `setsid nohup bash -c 'exec -a ${marker} sleep 300' > /dev/null 2>&1 < /dev/null & sleep 0.5; echo left`,
      ],
      env: {},
      timeoutMs: 30_000,
    });
    expect(result).toMatchObject({ exitCode: 0, stdout: 'left\n' });
    await until('the left-behind process to be gone', async () => commandsWith(marker).length === 0, 10_000);
    await p.after.releaseLease(p.config, {
      ...on('run-a', lease.id),
      keep: false,
      cancelActiveWork: true,
      syncBackTo: null,
    });
  });
});
