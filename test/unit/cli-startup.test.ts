// Every CLI call pays for what the CLI loads before it does anything: the help, a command's help and a usage
// error load commander and the command tree only, no schema, no client, no store, no Temporal. (The time
// itself is measured by `npm run bench:cli`, not asserted here.)
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { tsxLoaderUrl } from '../../store/embedded.js';

const INDEX = new URL('../../client/cli/index.ts', import.meta.url).href;

// A module hook after tsx's: prints every module loaded, as a line on stderr.
const dir = mkdtempSync(join(tmpdir(), 'envrun-cli-loads-'));
writeFileSync(
  join(dir, 'hooks.mjs'),
  `export async function load(url, context, next) { process.stderr.write('LOADED ' + url + '\\n'); return next(url, context); }\n`,
);
writeFileSync(
  join(dir, 'register.mjs'),
  `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`,
);

/** Runs main(args) in a fresh process; what it loaded, relative to the checkout or as package names. */
async function loadsOf(args: string[]): Promise<{ code: number; loaded: string[]; output: string }> {
  const code = `const { main } = await import(${JSON.stringify(INDEX)}); process.exitCode = await main(${JSON.stringify(args)});`;
  const run = promisify(execFile)(
    process.execPath,
    ['--import', tsxLoaderUrl(), '--import', join(dir, 'register.mjs'), '--input-type=module', '--eval', code],
    { timeout: 60_000 },
  );
  const { stdout, stderr, exitCode } = await run.then(
    (r) => ({ ...r, exitCode: 0 }),
    (e: { stdout: string; stderr: string; code: number }) => ({ stdout: e.stdout, stderr: e.stderr, exitCode: e.code }),
  );
  const root = new URL('../../', import.meta.url).href;
  const loaded = stderr
    .split('\n')
    .filter((l) => l.startsWith('LOADED file:'))
    .map((l) => l.slice('LOADED '.length))
    .map((url) => {
      const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
      return pkg ? pkg[1]! : url.replace(root, '');
    });
  return { code: exitCode, loaded: [...new Set(loaded)], output: stdout + stderr };
}

const LIGHT = ['commander', 'client/cli/index.ts', 'client/cli/commands.ts', 'client/cli/output.ts'];

it.each([
  { what: 'envrun --help', args: ['--help'], code: 0 },
  { what: 'a command group help', args: ['run', '--help'], code: 0 },
  { what: "a command's help", args: ['run', 'start', '--help'], code: 0 },
  { what: 'a usage error', args: ['run', 'start', '--company', 'c'], code: 2 },
])(
  '$what loads commander and the command tree only',
  async ({ args, code }) => {
    const r = await loadsOf(args);
    expect(r.code, r.output).toBe(code);
    expect(r.loaded.filter((m) => !LIGHT.includes(m))).toEqual([]);
    expect(r.loaded).toContain('commander'); // the hook sees what loads
  },
  90_000,
);

it('a command loads its own code when it runs: bad input is checked with the schemas, and nothing connects', async () => {
  const r = await loadsOf(['run', 'status', '--company', 'c', '--run', 'bad run id']);
  expect(r.code, r.output).toBe(2);
  expect(r.output).toContain('--run');
  expect(r.loaded).toEqual(expect.arrayContaining(['zod', 'client/cli/runs.ts', 'client/cli/report.ts']));
  expect(r.loaded).not.toContain('pg');
  expect(r.loaded).not.toContain('client/runs.ts'); // the Temporal client connects only after the input is checked
}, 90_000);
