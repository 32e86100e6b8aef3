// The ops story in the real Temporal Web UI (served by the dev server), driven in Debian's Chromium: a run
// stuck in awaiting_retry is found by filtering on the phase search attribute, and its page shows the code.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startDevServer, type DevServer } from '../../scripts/dev-server.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest } from '../support/runs.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts', import.meta.url));
let server: DevServer;
let h: Harness;
let browser: Browser;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium`);
  server = await startDevServer({ logFile: join(inject('tmpRoot'), 'ui-temporal.log') }); // with the Web UI
  h = await createHarness({ temporalAddress: server.address });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await h?.close();
  await server?.stop();
});

it('finds the awaiting_retry run by its phase and shows its error code', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'broken',
    driver: 'sandbox',
    config: { provider: 'fake', faults: { realize: { fail: 'always', message: 'registry unreachable' } } },
  });
  const req = runRequest({ companyId, environmentId: env.id, awaitRetryMs: 600_000 });
  const { workflowId } = await h.client.startRun(req);
  for (let i = 0; i < 100 && (await h.client.getRun(companyId, req.heartbeatRunId))?.phase !== 'awaiting_retry'; i++)
    await new Promise((r) => setTimeout(r, 150));
  expect((await h.client.getRun(companyId, req.heartbeatRunId))?.phase).toBe('awaiting_retry');

  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const query = encodeURIComponent(`EnvRunPhase="awaiting_retry" AND EnvRunCompanyId="${companyId}"`);
  // Visibility is eventually consistent: reload until the list shows the run.
  let found = false;
  for (let i = 0; i < 20 && !found; i++) {
    await page.goto(`${server.uiUrl}/namespaces/default/workflows?query=${query}`, { waitUntil: 'networkidle' });
    found = await page
      .getByText(workflowId, { exact: true })
      .first()
      .isVisible()
      .catch(() => false);
  }
  expect(found, 'the run appears when filtering on EnvRunPhase').toBe(true);
  await page.getByText(workflowId, { exact: true }).first().click();
  await page.waitForURL(/\/workflows\/envrun%2F/);
  // The run's page: its search attributes carry the phase and the error code.
  await page.getByText('Search Attributes', { exact: true }).first().click({ timeout: 30_000 });
  await expect
    .poll(
      async () => {
        const html = await page.content();
        return html.includes('workspace_realization_failed') && html.includes('awaiting_retry');
      },
      { timeout: 30_000 },
    )
    .toBe(true);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'ui-awaiting-retry.png'), fullPage: true });
  await h.client.cancelRun(companyId, req.heartbeatRunId);
}, 120_000);
