// A real OpenSSH server (Debian `openssh-server`) on 127.0.0.1, a free port, a throwaway host key and
// user key; stopped afterwards.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../lib/net.js';

export interface Sshd {
  port: number;
  username: string;
  /** `[127.0.0.1]:PORT ssh-ed25519 AAAA…` */
  knownHosts: string;
  privateKey: string;
  stop(): Promise<void>;
}

export const SSHD = '/usr/sbin/sshd';

export async function startSshd(dir: string, fixedPort?: number): Promise<Sshd> {
  if (!existsSync(SSHD)) throw new Error('sshd not found: apt-get install openssh-server');
  mkdirSync(dir, { recursive: true });
  mkdirSync('/run/sshd', { recursive: true }); // privilege separation directory
  for (const name of ['host_key', 'user_key']) {
    if (!existsSync(join(dir, name)))
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, name)]);
  }
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'user_key.pub')));
  const port = fixedPort ?? (await freePort());
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'LogLevel ERROR',
    ].join('\n') + '\n',
  );
  const child = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const hostPub = readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(/\s+/);
  const deadline = Date.now() + 10_000;
  while (!existsSync(join(dir, 'sshd.pid'))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`sshd did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    username: userInfo().username,
    knownHosts: `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}`,
    privateKey: readFileSync(join(dir, 'user_key'), 'utf8'),
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
