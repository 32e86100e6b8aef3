// Puts the declaration files of the packages in package.json `declarationTarballs` into node_modules/, from
// their published tarballs: `npm pack` fetches each (npm's cache serves it again), its sha512 must equal the
// pinned integrity, and only the listed members are unpacked. @paperclipai/server installs ~380 packages
// (1.4 GB) and @paperclipai/adapter-utils bundles a tool chain; the type test needs neither, only their
// declarations. Run after `npm ci` (which empties node_modules/).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { declarationTarballs } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
const work = mkdtempSync(join(tmpdir(), 'envrun-compat-'));
try {
  for (const { package: name, version, integrity, members } of declarationTarballs) {
    const spec = `${name}@${version}`;
    // Its standard output is the tarball's file name (the file list goes to the log, silenced).
    const out = execFileSync(
      'npm',
      ['pack', spec, '--ignore-scripts', '--loglevel=error', '--pack-destination', work],
      {
        cwd: work,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const tarball = join(work, out.trim().split('\n').pop() ?? '');
    const actual = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
    if (actual !== integrity) {
      throw new Error(`${spec}: tarball integrity ${actual} is not the pinned ${integrity} (package.json)`);
    }
    const dest = join(here, 'node_modules', name);
    rmSync(dest, { recursive: true, force: true });
    mkdirSync(dest, { recursive: true });
    // GNU tar: with --wildcards, `*` also matches `/`, so `dist/*.d.ts` takes the whole tree's declarations.
    execFileSync('tar', ['-xzf', tarball, '-C', dest, '--strip-components=1', '--wildcards', ...members], {
      stdio: 'inherit',
    });
    console.log(`${spec}: declarations unpacked into node_modules/${name} (integrity checked)`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
