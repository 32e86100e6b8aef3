// One Temporal dev server, one embedded PostgreSQL, one Debian PostgreSQL and one workflow bundle for the
// whole suite, on free ports, stopped at the end; and dist/ built (`npm run build`, incremental), which the
// `envrun` bin the CLI tests spawn runs.
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { ensureEmbeddedStore, stopEmbeddedStore } from '../../store/embedded.js';
import { bundleWorkflows } from '../../worker/bundle.js';
import { startDevServer } from '../../scripts/dev-server.js';
import { findDebianPostgresBin, startDebianPostgres } from './debian-postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    embeddedPgUrl: string;
    debianPgUrl: string | null;
    workflowBundle: string;
    tmpRoot: string;
  }
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * `npm run build` without npm: tsc -p tsconfig.build.json, then the migrations. A type error elsewhere in the
 * tree (the lint's business) does not stop the suite: tsc still writes the JavaScript, and the error is shown.
 */
async function buildDist(): Promise<void> {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const run = promisify(execFile);
  try {
    await run(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, maxBuffer: 16 << 20 });
  } catch (err) {
    const out = (err as { stdout?: string }).stdout ?? String(err);
    console.warn(`npm run build: tsc reported errors (the tests run what it emitted):\n${out.slice(0, 4000)}`);
  }
  await run(process.execPath, [join(ROOT, 'scripts', 'copy-migrations.mjs')], { cwd: ROOT });
  if (!existsSync(join(ROOT, 'dist', 'client', 'cli', 'index.js'))) throw new Error('npm run build wrote no dist/');
}

export default async function setup(project: TestProject) {
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-test-'));
  chmodSync(tmp, 0o755);
  const started: Array<() => Promise<unknown>> = [];
  try {
    const [temporal, embeddedUrl, bundle] = await Promise.all([
      // Idle workers poll again every 10 s (the server's default: 1 min), so a host's queue shows a poll
      // within TEST_HOST_STALE_MS while its worker lives (host loss is detected by that window).
      startDevServer({
        headless: true,
        logFile: join(tmp, 'temporal.log'),
        dynamicConfig: { 'matching.longPollExpirationInterval': '10s' },
      }),
      ensureEmbeddedStore(join(tmp, 'embedded')),
      bundleWorkflows(join(tmp, 'workflow-bundle.js')),
      buildDist(),
    ]);
    started.push(
      () => temporal.stop(),
      () => stopEmbeddedStore(join(tmp, 'embedded')),
    );
    let debianUrl: string | null = null;
    if (findDebianPostgresBin()) {
      const debian = await startDebianPostgres(join(tmp, 'debian-pg'));
      started.push(() => debian.stop());
      debianUrl = debian.url;
    } else if (process.env.CI) {
      throw new Error('CI must provide Debian PostgreSQL (apt-get install postgresql) for the store tests');
    }
    project.provide('temporalAddress', temporal.address);
    project.provide('embeddedPgUrl', embeddedUrl);
    project.provide('debianPgUrl', debianUrl);
    project.provide('workflowBundle', bundle);
    project.provide('tmpRoot', tmp);
  } catch (err) {
    for (const stop of started.reverse()) await stop().catch(() => undefined);
    throw err;
  }
  return async () => {
    for (const stop of started.reverse()) await stop().catch((e: unknown) => console.error(e));
    rmSync(tmp, { recursive: true, force: true });
  };
}
