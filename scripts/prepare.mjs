// npm's `prepare`: `npm install` / `npm ci` in the checkout build dist/ (`npm run build`), which the `envrun`
// bin, `npm run worker` and the package's exports run. Skipped, saying why, where there is nothing to build
// with: TypeScript not installed (`npm ci --omit=dev`: bring dist/ from a build step) or no sources yet (an
// image layer that installs the dependencies before it copies the code). Under `npm pack` and `npm publish`
// it does nothing: their `prepack` has just built.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function skip(reason) {
  console.log(`envrun prepare: dist/ not built: ${reason}`);
  process.exit(0);
}

if (process.env.npm_command === 'pack' || process.env.npm_command === 'publish') process.exit(0);
try {
  createRequire(import.meta.url).resolve('typescript/package.json');
} catch {
  skip('TypeScript is not installed (npm ci --omit=dev?)');
}
if (!existsSync(join(ROOT, 'tsconfig.build.json')) || !existsSync(join(ROOT, 'client'))) skip('no sources to build');
const npm = process.env.npm_execpath;
const result = npm
  ? spawnSync(process.execPath, [npm, 'run', 'build'], { cwd: ROOT, stdio: 'inherit' })
  : spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
process.exit(result.status ?? 1);
