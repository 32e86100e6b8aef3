// The bubblewrap sandbox's configuration and the arguments it becomes, as data: what an environment may
// ask for (network mode, limits within bounds), and the bwrap flags every command gets whatever it asks.
import { describe, expect, it } from 'vitest';
import {
  NetworkSetting,
  SandboxFds,
  SandboxLimits,
  prlimitArgs,
  sandboxArgs,
  sandboxEtcFiles,
  type NetworkMode,
} from '../../drivers/providers/bubblewrap/args.js';
import { createBubblewrapProvider } from '../../drivers/providers/bubblewrap/index.js';
import { sandboxSeccompFilter } from '../../drivers/providers/bubblewrap/seccomp.js';

const provider = createBubblewrapProvider({ rootDir: '/nonexistent/envrun-config-test', bwrapPath: null });

function argsFor(network: NetworkMode, command = 'make', args: string[] = ['test']) {
  const fds = new SandboxFds();
  const out = sandboxArgs({
    features: { disableUserns: true, tmpfsSize: true },
    network,
    limits: SandboxLimits.parse(undefined),
    workspace: '/data/sandboxes/bubblewrap/run-1/workspace',
    cwd: '/workspace',
    env: { CI: '1' },
    command,
    args,
    prlimit: '/usr/bin/prlimit',
    etcFiles: sandboxEtcFiles(network, { resolvConf: 'nameserver 192.0.2.53\n', hosts: null }),
    seccomp: sandboxSeccompFilter('x64'),
    fds,
    readOnly: ['/usr'],
  });
  return { args: out, fds };
}
const hasPair = (args: string[], a: string, b: string) => args.some((v, i) => v === a && args[i + 1] === b);

describe('bubblewrap sandbox: config', () => {
  it('defaults to no network and the documented limits', async () => {
    expect((await provider.validateConfig({ provider: 'bubblewrap' })).config).toMatchObject({
      network: 'none',
      limits: {
        processes: 512,
        addressSpaceBytes: 8 * 1024 ** 3,
        fileSizeBytes: 1024 ** 3,
        cpuSeconds: 3600,
        tmpBytes: 256 * 1024 ** 2,
      },
    });
  });

  it('reads the old boolean network (true = outbound) and refuses unknown modes, naming the field', async () => {
    expect(NetworkSetting.parse(true)).toBe('outbound');
    expect(NetworkSetting.parse(false)).toBe('none');
    await expect(provider.validateConfig({ provider: 'bubblewrap', network: 'lan' })).rejects.toThrow(
      /config\.network/,
    );
  });

  it('keeps limits within bounds and refuses unknown limit keys', async () => {
    expect((await provider.validateConfig({ provider: 'bubblewrap', limits: { processes: 64 } })).config).toMatchObject(
      {
        limits: { processes: 64, cpuSeconds: 3600 },
      },
    );
    await expect(provider.validateConfig({ provider: 'bubblewrap', limits: { processes: 0 } })).rejects.toThrow(
      /config\.limits\.processes/,
    );
    await expect(
      provider.validateConfig({ provider: 'bubblewrap', limits: { fileSizeBytes: 2 ** 60 } }),
    ).rejects.toThrow(/config\.limits\.fileSizeBytes/);
    await expect(provider.validateConfig({ provider: 'bubblewrap', limits: { nofile: 1 } })).rejects.toThrow(
      /config\.limits/,
    );
    expect(prlimitArgs(SandboxLimits.parse({ processes: 64 }))).toEqual([
      '--nproc=64',
      `--as=${8 * 1024 ** 3}`,
      `--fsize=${1024 ** 3}`,
      '--cpu=3600',
      '--core=0',
    ]);
  });

  it('every command gets a user namespace without privileges, new namespaces, a read-only root and sized tmpfs', () => {
    for (const network of ['none', 'outbound', 'host'] as const) {
      const { args } = argsFor(network);
      for (const flag of [
        '--unshare-user',
        '--disable-userns',
        '--unshare-pid',
        '--unshare-ipc',
        '--unshare-uts',
        '--new-session',
        '--die-with-parent',
      ]) {
        expect(args, flag).toContain(flag);
      }
      expect(hasPair(args, '--uid', '1000') && hasPair(args, '--gid', '1000')).toBe(true);
      expect(hasPair(args, '--cap-drop', 'ALL')).toBe(true);
      expect(hasPair(args, '--remount-ro', '/')).toBe(true);
      expect(hasPair(args, '--ro-bind', '/usr')).toBe(true);
      expect(hasPair(args, '--bind', '/data/sandboxes/bubblewrap/run-1/workspace')).toBe(true);
      expect(args.indexOf('--size')).toBeLessThan(args.indexOf('--tmpfs'));
      expect(args.includes('--unshare-net')).toBe(network !== 'host');
      expect(args.includes('--seccomp')).toBe(true);
      expect(args.includes('--info-fd') && args.includes('--block-fd')).toBe(true); // recorded before it starts
    }
  });

  it('the command comes last, after prlimit and two `--`: it can never be read as an option', () => {
    const { args } = argsFor('none', '--bind', ['/', '/host']);
    const end = args.indexOf('--');
    expect(args.slice(end)).toEqual([
      '--',
      '/usr/bin/prlimit',
      ...prlimitArgs(SandboxLimits.parse(undefined)),
      '--',
      '--bind',
      '/',
      '/host',
    ]);
  });

  it("writes its own /etc/passwd, group, hosts and resolv.conf (outbound: slirp4netns's DNS)", () => {
    expect(Object.keys(sandboxEtcFiles('none', { resolvConf: 'x', hosts: 'y' })).sort()).toEqual([
      '/etc/group',
      '/etc/hosts',
      '/etc/nsswitch.conf',
      '/etc/passwd',
    ]);
    expect(sandboxEtcFiles('outbound', { resolvConf: 'x', hosts: 'y' })['/etc/resolv.conf']).toBe(
      'nameserver 10.0.2.3\n',
    );
    expect(sandboxEtcFiles('host', { resolvConf: 'x', hosts: 'y' })['/etc/resolv.conf']).toBe('x');
    const { fds } = argsFor('outbound');
    expect(fds.specs.filter((s) => s.kind === 'data')).toHaveLength(6); // 5 files + the seccomp filter
  });

  it('the seccomp filter is well formed: whole instructions, every jump inside the program, ending in a return', () => {
    const bpf = sandboxSeccompFilter('x64')!;
    expect(bpf.length % 8).toBe(0);
    const n = bpf.length / 8;
    for (let i = 0; i < n; i++) {
      const code = bpf.readUInt16LE(i * 8);
      if ((code & 0x07) === 0x05) {
        // BPF_JMP: both targets must land inside the program
        expect(i + 1 + bpf.readUInt8(i * 8 + 2)).toBeLessThan(n);
        expect(i + 1 + bpf.readUInt8(i * 8 + 3)).toBeLessThan(n);
      }
    }
    expect(bpf.readUInt16LE((n - 1) * 8)).toBe(0x06); // BPF_RET
    expect(sandboxSeccompFilter('arm64')).toBeNull();
  });
});
