// Load: 500 runs started concurrently, end to end (start → ready → complete → released) with the fake
// provider; all complete, the audit holds; prints throughput and p95.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest, tempWorkspace } from '../support/runs.js';

const RUNS = Number(process.env.ENVRUN_LOAD_RUNS ?? 500);
let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

it(`${RUNS} concurrent runs all complete and the audit holds`, async () => {
  const companyId = uniqueId('load');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'load',
    driver: 'sandbox',
    config: { provider: 'fake' },
  });
  const cwd = tempWorkspace();
  const ids = Array.from({ length: RUNS }, (_, i) => `run-${i}`);
  const started = performance.now();
  const latencies = await Promise.all(
    ids.map(async (id) => {
      const t = performance.now();
      await h.client.startRunAndWaitReady(runRequest({ companyId, heartbeatRunId: id, cwd, environmentId: env.id }));
      const ready = performance.now() - t;
      const state = await h.client.completeRun(companyId, id, { status: 'succeeded' });
      expect(state.phase).toBe('released');
      return ready;
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const sorted = [...latencies].sort((a, b) => a - b);
  const p95 = sorted[Math.ceil(0.95 * sorted.length) - 1]!;
  console.log(
    `load: ${RUNS} runs in ${seconds.toFixed(1)} s = ${(RUNS / seconds).toFixed(1)} runs/s end to end; start→ready p95 ${Math.round(p95)} ms`,
  );
  const outcomes = await audit(h, companyId, ids);
  expect(new Set(outcomes.values())).toEqual(new Set(['completed']));
}, 600_000);
