// Attacks that look for the worker from inside the sandbox: its processes, its environment, its open
// file descriptors.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasBwrap, openSandbox, type Sandbox } from '../support/sandbox.js';

const marker = `worker-secret-${randomUUID()}`;
let box: Sandbox;
beforeAll(async () => {
  process.env.ENVRUN_TEST_WORKER_MARKER = marker; // what a worker's secrets look like in its environment
  box = await openSandbox();
});
afterAll(async () => {
  delete process.env.ENVRUN_TEST_WORKER_MARKER;
  await box?.close();
});

describe.skipIf(!hasBwrap())('bubblewrap sandbox: processes', () => {
  it("sees no worker environment anywhere in /proc (pid 1 is the sandbox's own init)", async () => {
    const res = await box.sh(
      'cat /proc/1/environ | tr "\\0" "\\n"; echo ---; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr "\\0" "\\n"',
    );
    expect(res.exitCode).toBe(0);
    expect(res.stdout).not.toContain(marker);
    expect(res.stdout).not.toContain('ENVRUN_TEST_WORKER_MARKER');
    const pid1 = res.stdout.split('---')[0]!.trim().split('\n').filter(Boolean);
    for (const line of pid1) expect(line).toMatch(/^(PATH|PWD|SHLVL|_)=/); // the sandbox's init: at most what bwrap was started with
  });

  it('lists only its own processes', async () => {
    const res = await box.sh(
      'for p in /proc/[0-9]*; do printf "%s %s\\n" "${p#/proc/}" "$(tr "\\0" " " < $p/cmdline)"; done',
    );
    expect(res.exitCode).toBe(0);
    const procs = res.stdout.trim().split('\n');
    expect(procs.length).toBeLessThanOrEqual(6); // init, prlimit→bash, the loop's subshells
    expect(res.stdout).not.toMatch(/node|vitest|temporal|postgres/);
    expect(res.stdout).not.toContain(String(process.pid) + ' ');
    const pids = procs.map((l) => Number(l.split(' ')[0]));
    expect(Math.min(...pids)).toBe(1);
  });

  it('inherits no file descriptor of the worker beyond stdin, stdout and stderr', async () => {
    const res = await box.sh('ls -l /proc/self/fd | grep -v "/proc/.*/fd$" | awk \'NR > 1 { print $9 }\'');
    expect(res.exitCode).toBe(0);
    expect(res.stdout.trim().split('\n').sort()).toEqual(['0', '1', '2']);
  });
});
