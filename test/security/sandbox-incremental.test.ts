// A bubblewrap lease realized again (a pooled sandbox taken by a run, a reused one) gets only what changed
// in the workspace since its last upload: an unchanged 1,000-file workspace writes nothing; a changed, a
// new and a deleted file are seen inside; what the sandbox made (node_modules) stays; the baseline is
// root's, beside the leases' folder, and goes with the lease.
//
// ATTACK: between two uploads the sandbox (as the sandbox uid) swaps workspace folders for links to a
// root-only host folder. An upload that writes and deletes by path (join(workspace, rel)) would write
// into that folder and delete its files as root; this one must do neither.
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import type { ProviderLease, SandboxProvider } from '../../drivers/providers/contract.js';
import { callContext, hasBwrap, isRoot, sandboxConfig, sandboxProvider } from '../support/sandbox.js';

const ctx = callContext('run-incremental');

interface Box {
  provider: SandboxProvider<Record<string, unknown>>;
  config: Record<string, unknown>;
  lease: ProviderLease;
  local: string;
  /** The lease's baseline file (root's folder beside the leases' root). */
  baseline: string;
  /** Realizes `local` into the lease again: the progress line and the realize's metadata. */
  realize(): Promise<{ line: string; upload: unknown }>;
  sh(script: string): Promise<{ exitCode: number | null; stdout: string; stderr: string }>;
  release(): Promise<void>;
}

async function box(local: string): Promise<Box> {
  const provider = await sandboxProvider();
  const { config } = await provider.validateConfig(sandboxConfig({}));
  const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
  const leaseRoot = String(lease.metadata.root);
  const rootDir = dirname(leaseRoot);
  const baseline = join(dirname(rootDir), `.${basename(rootDir)}-baselines`, `${basename(leaseRoot)}.json`);
  const realize = async () => {
    const lines: string[] = [];
    const r = await provider.realizeWorkspace(config, {
      ...ctx,
      lease,
      localPath: local,
      onProgress: (line: string) => lines.push(line),
    });
    return { line: lines.join('\n'), upload: r.metadata?.upload };
  };
  await realize();
  return {
    provider,
    config,
    lease,
    local,
    baseline,
    realize,
    sh: (script) =>
      provider.execute(
        config,
        { ...ctx, lease },
        { command: 'bash', args: ['-c', script], env: {}, timeoutMs: 30_000 },
      ),
    release: async () => {
      await provider.releaseLease(config, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null });
    },
  };
}

/** A local workspace of `folders` × `files` files (d<i>/f<j>.ts). */
function workspace(folders: number, files: number): string {
  const local = mkdtempSync(join(tmpdir(), 'envrun-incremental-local-'));
  for (let d = 0; d < folders; d++) {
    mkdirSync(join(local, `d${d}`));
    for (let f = 0; f < files; f++) writeFileSync(join(local, `d${d}`, `f${f}.ts`), `export const x = ${d}_${f};\n`);
  }
  return local;
}

describe.runIf(hasBwrap())('bubblewrap: realizing a lease again uploads what changed', () => {
  it('1,000 unchanged files: nothing written; a change, a new and a deleted file seen inside; node_modules stays', async () => {
    const b = await box(workspace(50, 20));
    try {
      expect(existsSync(b.baseline)).toBe(true);
      expect(statSync(b.baseline).mode & 0o777).toBe(0o600);
      expect(statSync(dirname(b.baseline)).mode & 0o777).toBe(0o700);
      const made = await b.sh('mkdir -p node_modules/x && echo module > node_modules/x/index.js');
      expect(made.exitCode, made.stderr).toBe(0);

      const again = await b.realize();
      expect(again.upload).toBe('changes');
      expect(again.line).toContain('0 written, 1000 unchanged, 0 bytes');

      writeFileSync(join(b.local, 'd1', 'f1.ts'), 'changed on the host\n');
      writeFileSync(join(b.local, 'd2', 'new.ts'), 'new on the host\n');
      rmSync(join(b.local, 'd3', 'f4.ts'));
      const changed = await b.realize();
      expect(changed.line).toContain('2 written, 998 unchanged');
      expect(changed.line).toContain('1 removed');
      const inside = await b.sh(
        'cat d1/f1.ts d2/new.ts node_modules/x/index.js && test ! -e d3/f4.ts && echo more >> d2/new.ts && echo ok',
      );
      expect(inside.exitCode, inside.stderr).toBe(0);
      expect(inside.stdout).toBe('changed on the host\nnew on the host\nmodule\nok\n');
    } finally {
      await b.release();
    }
    expect(existsSync(b.baseline)).toBe(false);
  });

  it('a baseline that is not whole is not trusted: the next realize copies everything', async () => {
    const b = await box(workspace(2, 2));
    try {
      writeFileSync(b.baseline, '{"version":1,"files":[');
      const r = await b.realize();
      expect(r.upload).toBe('full');
      expect(r.line).toContain('4 written');
      expect((await b.realize()).upload).toBe('changes');
    } finally {
      await b.release();
    }
  });

  describe.runIf(isRoot())('ATTACK: workspace folders swapped for links to a root-only host folder', () => {
    it('the upload writes and deletes through neither link; the host folder is intact', async () => {
      const secret = join(inject('tmpRoot'), `root-only-${randomUUID().slice(0, 8)}`);
      mkdirSync(secret, { mode: 0o700 });
      chmodSync(secret, 0o700);
      const secretFiles = ['changed.ts', 'gone.ts', 'same.ts', 'new.ts', 'f0.ts'];
      for (const name of secretFiles) writeFileSync(join(secret, name), `secret ${name}\n`, { mode: 0o600 });

      const local = workspace(1, 1);
      mkdirSync(join(local, 'sub'));
      for (const name of ['changed.ts', 'gone.ts', 'same.ts']) writeFileSync(join(local, 'sub', name), `${name}\n`);
      const b = await box(local);
      try {
        // As the sandbox uid: `sub` (files to change and delete) and `d0` (a folder to delete) become links.
        const swapped = await b.sh(`mv sub sub.moved && ln -s ${secret} sub && mv d0 d0.moved && ln -s ${secret} d0`);
        expect(swapped.exitCode, swapped.stderr).toBe(0);
        writeFileSync(join(local, 'sub', 'changed.ts'), 'changed on the host\n');
        writeFileSync(join(local, 'sub', 'new.ts'), 'new on the host\n');
        rmSync(join(local, 'sub', 'gone.ts'));
        rmSync(join(local, 'd0'), { recursive: true });
        const r = await b.realize();
        expect(r.upload).toBe('changes');

        expect(readdirSync(secret).sort()).toEqual([...secretFiles].sort());
        for (const name of secretFiles) {
          expect(readFileSync(join(secret, name), 'utf8')).toBe(`secret ${name}\n`);
          expect(statSync(join(secret, name)).uid).toBe(0);
        }
        const inside = await b.sh(
          'test -d sub && ! test -L sub && cat sub/changed.ts sub/new.ts && ls sub && test -L d0',
        );
        expect(inside.exitCode, inside.stderr).toBe(0);
        expect(inside.stdout).toBe('changed on the host\nnew on the host\nchanged.ts\nnew.ts\n');
      } finally {
        await b.release();
      }
      expect(readdirSync(secret).sort()).toEqual([...secretFiles].sort());
    });
  });
});
