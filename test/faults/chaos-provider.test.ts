// Fault: a provider that fails half of its calls at random (seeded: the same seed fails the same calls),
// before or after the call takes effect. Runs still converge: each ends ready→completed or failed with a
// declared code, one lease per run; cleanups the run's own retries could not finish are finished by the
// reaper; then the audit holds.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { audit } from '../support/audit.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runEnd, runRequest } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

it('a provider failing half its calls (seeded): every run converges, the reaper mops up, the audit holds', async () => {
  const companyId = uniqueId('co');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'chaos',
    driver: 'sandbox',
    config: { provider: 'fake', chaos: { rate: 0.5, seed: 20261127 } },
  });
  const ids = Array.from({ length: 48 }, (_, i) => `run-${i}`);
  const ended = await Promise.all(
    ids.map(async (id) => {
      try {
        await h.client.startRunAndWaitReady(
          runRequest({
            companyId,
            heartbeatRunId: id,
            environmentId: env.id,
            runtimeOverlay: { provisionCommand: 'true' },
          }),
        );
      } catch (err) {
        return `failed:${(err as { code?: string }).code}`;
      }
      const state = await h.client
        .completeRun(companyId, id, { status: 'succeeded' })
        .catch((e: unknown) => e as Error);
      return state instanceof Error ? `complete refused: ${state.message}` : `ended ${state.phase}`;
    }),
  );
  const injected = readFileSync(join(h.fakeRoot, 'chaos.log'), 'utf8').trim().split('\n');
  console.log(`chaos: ${injected.length} injected provider faults over ${ids.length} runs; outcomes:`, tally(ended));
  expect(injected.length).toBeGreaterThan(ids.length); // the chaos is real: more faults than runs
  expect(
    ended.filter(
      (e) =>
        !/^(failed:(lease_acquire_failed|workspace_realization_failed|transport_resolution_failed)|ended (released|failed))$/.test(
          e,
        ),
    ),
  ).toEqual([]);
  // Both ways out happen: runs that got through all their retries, and runs whose retries ran out.
  expect(ended.filter((e) => e.startsWith('ended')).length).toBeGreaterThan(0);
  expect(ended.filter((e) => e.startsWith('failed:')).length).toBeGreaterThan(0);

  // A run that failed before ready answers at once, then releases: wait until every workflow has closed.
  await Promise.all(ids.map((id) => runEnd(h, companyId, id)));
  // A release whose provider failed all of its attempts is recorded cleanupStatus: failed (the run then
  // ends lease_cleanup_failed); the reaper's sweep tries again until the provider lets it.
  const cleanupFailed = (await h.store.listLeases(companyId)).filter((l) => l.cleanupStatus === 'failed').length;
  let sweeps = 0;
  for (; sweeps < 20; sweeps++) {
    const pending = (await h.store.listLeases(companyId)).filter((l) => l.cleanupStatus !== 'success');
    if (pending.length === 0) break;
    await h.client.reaperRunOnce();
  }
  console.log(`chaos: ${cleanupFailed} cleanups failed in their run; ${sweeps} reaper sweeps finished them`);
  expect(cleanupFailed).toBeGreaterThan(0); // this seed fails some release 5 times in a row: the reaper's path runs
  expect((await h.store.listLeases(companyId)).filter((l) => l.cleanupStatus !== 'success')).toEqual([]);
  const outcomes = await audit(h, companyId, ids);
  expect([...outcomes.values()].every((o) => o === 'completed' || o.startsWith('failed:'))).toBe(true);
}, 300_000);

function tally(xs: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const x of xs) counts[x] = (counts[x] ?? 0) + 1;
  return counts;
}
