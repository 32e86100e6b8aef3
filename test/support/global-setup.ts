// One Temporal dev server, one embedded PostgreSQL, one Debian PostgreSQL and one workflow bundle for the
// whole suite, on free ports, stopped at the end.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureEmbeddedStore, stopEmbeddedStore } from '../../store/embedded.js';
import { bundleWorkflows } from '../../scripts/bundle-workflows.js';
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

export default async function setup(project: TestProject) {
  const tmp = mkdtempSync(join(tmpdir(), 'envrun-test-'));
  chmodSync(tmp, 0o755);
  const started: Array<() => Promise<unknown>> = [];
  try {
    const [temporal, embeddedUrl, bundle] = await Promise.all([
      startDevServer({ headless: true, logFile: join(tmp, 'temporal.log') }),
      ensureEmbeddedStore(join(tmp, 'embedded')),
      bundleWorkflows(join(tmp, 'workflow-bundle.js')),
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
