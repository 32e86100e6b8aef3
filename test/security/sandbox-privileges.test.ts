// Attacks on the bubblewrap sandbox's privileges, run as root (the worker's usual user in a container):
// capabilities, remounting the read-only system, nested user namespaces, the syscalls seccomp refuses.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasBwrap, hostProcessesWith, isRoot, openSandbox, type Sandbox } from '../support/sandbox.js';

const mark = `envrun-evil-${randomUUID().slice(0, 8)}`;
const hostTargets = ['/usr', '/etc', '/bin', '/usr/local/bin', '/usr/lib'].map((dir) => join(dir, mark));

let box: Sandbox;
beforeAll(async () => {
  box = await openSandbox();
});
afterAll(async () => {
  await box?.close();
  for (const path of hostTargets) rmSync(path, { force: true }); // a sandbox that escaped must not leave them behind
});

describe.skipIf(!hasBwrap())('bubblewrap sandbox: privileges', () => {
  it('holds no capabilities (CapEff, CapPrm and the bounding set are empty)', async () => {
    const res = await box.sh('grep -E "^Cap(Eff|Prm|Bnd|Amb):" /proc/self/status');
    expect(res.exitCode).toBe(0);
    expect(res.stdout).toMatch(/^CapEff:\s+0000000000000000$/m);
    expect(res.stdout).toMatch(/^CapPrm:\s+0000000000000000$/m);
    expect(res.stdout).toMatch(/^CapBnd:\s+0000000000000000$/m);
  });

  it('runs as an unprivileged uid, inside and (seen from the host) outside', async () => {
    const tag = `uid-probe-${randomUUID().slice(0, 8)}`;
    const running = box.sh(`id -u; id -g; exec -a ${tag} sleep 2`);
    let hostUid: string | undefined;
    for (let i = 0; i < 100 && hostUid === undefined; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const pid = hostProcessesWith(tag)[0];
      if (pid) hostUid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    }
    const res = await running;
    const [uid, gid] = res.stdout.trim().split('\n');
    expect(uid).not.toBe('0');
    expect(gid).not.toBe('0');
    expect(hostUid).toBeDefined();
    expect(hostUid).not.toBe('0'); // never the host's root
  });

  it('cannot remount /usr read-write, nor write into /usr, /etc or /bin; the host stays untouched', async () => {
    const script = [
      'mount -o remount,bind,rw /usr && echo REMOUNTED',
      ...hostTargets.map((path) => `echo pwned > ${path} && echo WROTE ${path}`),
      'true',
    ].join('\n');
    const res = await box.sh(script);
    expect(res.stdout).not.toContain('REMOUNTED');
    expect(res.stdout).not.toContain('WROTE');
    for (const path of hostTargets) expect(existsSync(path), path).toBe(false);
  });

  it('cannot write its own root, /dev or /proc/sys', async () => {
    const res = await box.sh(
      [
        'touch /newfile && echo WROTE-ROOT',
        'touch /dev/newfile && echo WROTE-DEV',
        'echo 1 > /proc/sys/kernel/sysrq && echo WROTE-SYSCTL',
        'true',
      ].join('\n'),
    );
    expect(res.stdout).toBe('');
  });

  it('cannot create user namespaces (unshare -U, unshare -r)', async () => {
    const res = await box.sh('unshare -U true && echo USERNS; unshare -r id -u && echo ROOTMAP; true');
    expect(res.stdout).not.toContain('USERNS');
    expect(res.stdout).not.toContain('ROOTMAP');
    expect(res.stderr).toMatch(/unshare failed/);
  });

  it.skipIf(process.arch !== 'x64' || !existsSync('/usr/bin/python3'))(
    'seccomp refuses ptrace, keyctl, bpf, perf_event_open and userfaultfd with EPERM',
    async () => {
      const py = [
        'import ctypes, os',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'for name, nr in [("ptrace", 101), ("keyctl", 250), ("bpf", 321), ("perf_event_open", 298), ("userfaultfd", 323), ("mount", 165), ("setns", 308)]:',
        '    ctypes.set_errno(0)',
        '    r = libc.syscall(nr, 0, 0, 0, 0, 0)',
        '    print(name, r, ctypes.get_errno())',
        'pid = os.fork()',
        'if pid == 0: os._exit(7)',
        'print("fork", os.waitpid(pid, 0)[1] >> 8)',
      ].join('\n');
      const res = await box.sh(`python3 -c '${py}'`);
      expect(res.exitCode, res.stderr).toBe(0);
      for (const name of ['ptrace', 'keyctl', 'bpf', 'perf_event_open', 'userfaultfd', 'mount', 'setns']) {
        expect(res.stdout).toContain(`${name} -1 1\n`); // EPERM
      }
      expect(res.stdout).toContain('fork 7'); // ordinary process creation still works
    },
  );

  it.skipIf(!isRoot())("the workspace is the sandbox's: its files belong to an unprivileged host uid", async () => {
    const res = await box.sh('echo made > made.txt && id -u');
    expect(res.exitCode, res.stderr).toBe(0);
    expect(statSync(join(box.hostWorkspace, 'made.txt')).uid).not.toBe(0);
  });
});
