// Resource attacks: a fork bomb, filling the disk and /tmp, eating memory and CPU. Each must be stopped
// by the sandbox's limits, the command must return, and the worker (this process) must be unharmed.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hasBwrap, hostProcessesWith, openSandbox, type Sandbox } from '../support/sandbox.js';

const MiB = 1024 * 1024;
const opened: Sandbox[] = [];
async function open(limits: Record<string, number>): Promise<Sandbox> {
  const box = await openSandbox({ limits });
  opened.push(box);
  return box;
}
afterAll(async () => {
  for (const box of opened) await box.close();
});

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
    if (check()) return true;
  return check();
}

describe.skipIf(!hasBwrap())('bubblewrap sandbox: resource limits', () => {
  it('a fork bomb is stopped by the process limit, the command returns, the worker is unharmed', async () => {
    const box = await open({ processes: 64 });
    const tag = `bomb-${randomUUID().slice(0, 8)}`;
    const started = Date.now();
    // The bomb runs for 3 s, its fork errors kept; the rest uses builtins only (no fork is left to have).
    const script = [
      `: ${tag}`,
      'mkfifo /tmp/wait; exec 9<>/tmp/wait',
      '( b() { b | b & }; b ) 2>/tmp/bomb.err',
      'read -t 3 -u 9',
      'n=0; for p in /proc/[0-9]*; do n=$((n+1)); done',
      'kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null',
      'e=0; while IFS= read -r l; do case "$l" in *"Resource temporarily unavailable"*) e=$((e+1));; esac; done < /tmp/bomb.err',
      'echo "procs $n refused $e"',
    ].join('\n');
    const res = await box.sh(script, { timeoutMs: 40_000 });
    expect(res.timedOut).toBe(false);
    const m = /procs (\d+) refused (\d+)/.exec(res.stdout);
    expect(m, res.stdout + res.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(66); // 64 processes of the sandbox uid, give or take one being reaped
    expect(Number(m![2])).toBeGreaterThan(0); // fork hit RLIMIT_NPROC
    expect(Date.now() - started).toBeLessThan(35_000);
    // Nothing of it is left on the host, and this process can still make processes.
    expect(await waitUntil(() => hostProcessesWith(tag).length === 0, 5000)).toBe(true);
    expect(execFileSync('/bin/echo', ['alive'], { encoding: 'utf8' })).toBe('alive\n');
  });

  it('the process limit counts per command: many processes are fine under it', async () => {
    const box = await open({ processes: 64 });
    const res = await box.sh('for i in $(seq 40); do sleep 2 & done; wait; echo all-ran');
    expect(res.stdout).toContain('all-ran');
    expect(res.stderr).toBe('');
  });

  it('filling the workspace is stopped by the file-size limit; the host file stays within it', async () => {
    const box = await open({ fileSizeBytes: 16 * MiB });
    const res = await box.sh(
      'dd if=/dev/zero of=/workspace/big bs=1M count=64 2>&1; echo "dd $?"; stat -c %s /workspace/big',
    );
    expect(res.stdout).toMatch(/dd (153|1)\b/); // SIGXFSZ (128+25), or the write refused
    const host = join(box.hostWorkspace, 'big');
    expect(existsSync(host)).toBe(true);
    expect(statSync(host).size).toBeLessThanOrEqual(16 * MiB);
  });

  it('filling /tmp and /dev/shm is stopped by the tmpfs size', async () => {
    const box = await open({ tmpBytes: 8 * MiB, fileSizeBytes: 1024 * MiB });
    const res = await box.sh(
      'dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1; stat -c "tmp %s" /tmp/big; for i in $(seq 20); do dd if=/dev/zero of=/dev/shm/f$i bs=1M count=1 2>/dev/null || break; done; du -sm /dev/shm | cut -f1 | sed "s/^/shm /"',
    );
    expect(res.stdout).toMatch(/No space left on device/);
    const tmp = Number(/tmp (\d+)/.exec(res.stdout)?.[1]);
    expect(tmp).toBeLessThanOrEqual(8 * MiB);
    expect(Number(/shm (\d+)/.exec(res.stdout)?.[1])).toBeLessThanOrEqual(8);
  });

  it.skipIf(!existsSync('/usr/bin/python3'))('a process cannot take more address space than the limit', async () => {
    const box = await open({ addressSpaceBytes: 256 * MiB });
    const res = await box.sh('python3 -c "b = bytearray(512 * 1024 * 1024); print(\\"GOT\\", len(b))"; echo "py $?"');
    expect(res.stdout).not.toContain('GOT');
    expect(res.stderr).toMatch(/MemoryError/);
  });

  it('a CPU hog is killed by the CPU-time limit', async () => {
    const box = await open({ cpuSeconds: 1 });
    const started = Date.now();
    const res = await box.sh('bash -c "while :; do :; done"; echo "hog $?"', { timeoutMs: 20_000 });
    expect(res.timedOut).toBe(false);
    expect(res.stdout).toMatch(/hog (152|137)/); // SIGXCPU or SIGKILL
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
