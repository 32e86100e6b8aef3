// What a bubblewrap sandbox leaves in its workspace comes back through the safe copy: planted git config
// and hooks never reach the host repository, a FIFO does not stop release, a setuid bit is dropped, and
// a link out of the workspace is not brought back.
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hasBwrap, openSandbox } from '../support/sandbox.js';

describe.runIf(hasBwrap())('bubblewrap sync-back', () => {
  it('plants, FIFOs, setuid files and outward links: release succeeds, the host repository is untouched', async () => {
    const local = mkdtempSync(join(tmpdir(), 'envrun-bwsync-'));
    execFileSync('git', ['init', '-q', local]);
    execFileSync('sh', ['-c', `echo hello > ${join(local, 'README.md')}`]);
    const configBefore = readFileSync(join(local, '.git', 'config'), 'utf8');
    const marker = join(mkdtempSync(join(tmpdir(), 'envrun-marker-')), 'ran');
    const box = await openSandbox({ local });
    const planted = await box.sh(
      [
        `printf '[core]\\n\\tfsmonitor = "touch ${marker}"\\n' >> .git/config`,
        `printf '#!/bin/sh\\ntouch ${marker}\\n' > .git/hooks/post-checkout && chmod +x .git/hooks/post-checkout`,
        'mkfifo pipe',
        'echo x > suid && chmod 4755 suid',
        'ln -s /etc/passwd outward',
        'echo changed > README.md',
      ].join(' && '),
    );
    expect(planted.exitCode, planted.stderr).toBe(0);
    await box.closeWithSyncBack();

    expect(readFileSync(join(local, 'README.md'), 'utf8')).toBe('changed\n');
    expect(readFileSync(join(local, '.git', 'config'), 'utf8')).toBe(configBefore);
    expect(existsSync(join(local, '.git', 'hooks', 'post-checkout'))).toBe(false);
    expect(existsSync(join(local, 'pipe'))).toBe(false);
    expect(statSync(join(local, 'suid')).mode & 0o7000).toBe(0);
    expect(existsSync(join(local, 'outward')) && lstatSync(join(local, 'outward')).isSymbolicLink()).toBe(false);
    execFileSync('git', ['-C', local, 'status', '--short']);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(box.hostWorkspace)).toBe(false);
  });
});
