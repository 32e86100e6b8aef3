// One embedded server per data folder, shared by several processes; never two.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { ensureEmbeddedStore, readStoreInfo, stopEmbeddedStore, tsxLoaderUrl } from '../../store/embedded.js';

const dataDir = mkdtempSync(join(tmpdir(), 'envrun-embedded-'));
const ensureScript = fileURLToPath(new URL('../support/ensure-store.ts', import.meta.url));

afterAll(async () => {
  await stopEmbeddedStore(dataDir);
});

it('several processes starting the store at once share one server', async () => {
  const run = () => promisify(execFile)(process.execPath, ['--import', tsxLoaderUrl(), ensureScript, dataDir]);
  const outputs = await Promise.all([run(), run(), run()]);
  const urls = new Set(outputs.map((o) => o.stdout.trim()));
  expect(urls.size).toBe(1);
  const info = readStoreInfo(dataDir)!;
  // The postmaster.pid of the one server names the port every process got.
  const postmaster = readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n');
  expect(Number(postmaster[3])).toBe(info.port);
  // This process joins too, and can use it.
  const url = await ensureEmbeddedStore(dataDir);
  expect(url).toBe([...urls][0]);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const { rows } = await client.query('select count(*)::int as n from pg_stat_activity where backend_type = $1', [
    'client backend',
  ]);
  expect(rows[0].n).toBeGreaterThanOrEqual(1);
  await client.end();
  // The password lives in the data folder (0600), not in the URL's logs.
  expect(readFileSync(join(dataDir, 'credentials.json'), 'utf8')).toContain(info.password);
});

it('stops, and starts again on the same data folder with its data kept', async () => {
  const url = await ensureEmbeddedStore(dataDir);
  const c1 = new pg.Client({ connectionString: url });
  await c1.connect();
  await c1.query('create table if not exists kept (v text)');
  await c1.query(`insert into kept values ('x')`);
  await c1.end();
  expect(await stopEmbeddedStore(dataDir)).toBe(true);
  expect(await stopEmbeddedStore(dataDir)).toBe(false);
  const url2 = await ensureEmbeddedStore(dataDir);
  const c2 = new pg.Client({ connectionString: url2 });
  await c2.connect();
  expect((await c2.query('select v from kept')).rows).toEqual([{ v: 'x' }]);
  await c2.end();
});
