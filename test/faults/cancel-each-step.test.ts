// Fault: a cancel arriving during each step in turn. The step is held open (an activity interceptor
// delays it, or the provision command sleeps) so the cancel lands inside it; every time, whatever was
// leased is released, nothing leaks and nothing is logged twice.
import type { ActivityInboundCallsInterceptor } from '@temporalio/worker';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import type { RunState } from '../../contracts/index.js';
import { ACTIVITY_ACTIONS } from '../../contracts/index.js';
import { audit } from '../support/audit.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runEnd, runRequest, until } from '../support/runs.js';

/** Which step to hold open, and for how long: set per case. `entered` fires when the step starts. */
interface Hold {
  activity: string;
  action?: string;
  ms: number;
}
let hold: Hold | null = null;
let entered: () => void = () => undefined;
const holdStep = (type: string): ActivityInboundCallsInterceptor => ({
  async execute(input, next) {
    const action = (input.args[0] as { action?: string } | undefined)?.action;
    if (hold && hold.activity === type && (!hold.action || hold.action === action)) {
      entered();
      await new Promise((r) => setTimeout(r, hold!.ms));
    }
    return next(input);
  },
});

let h: Harness;
beforeAll(async () => {
  h = await createHarness({
    workerExtra: { interceptors: { activity: [(ctx) => ({ inbound: holdStep(ctx.info.activityType) })] } },
  });
});
afterAll(async () => {
  await h?.close();
});

interface Case {
  step: string;
  hold?: Hold;
  provision?: string;
  /** True when the run is inside the step (for steps not held by the interceptor; a workflow running a
   * local activity answers no query until it is done, so held steps report themselves instead). */
  inside?: (s: RunState) => boolean;
  /** Completes the run first (the release step). */
  complete?: boolean;
}

const cases: Case[] = [
  { step: 'resolveEnvironment', hold: { activity: 'resolveEnvironment', ms: 1500 } },
  { step: 'acquireLease', hold: { activity: 'acquireLease', ms: 1500 } },
  // The prepare step realizes (the provision command sleeps), then persists and resolves the target.
  { step: 'prepareWorkspace (realizing)', provision: 'sleep 5', inside: (s) => s.phase === 'realizing' },
  { step: 'prepareWorkspace (held)', hold: { activity: 'prepareWorkspace', ms: 1500 } },
  { step: 'ready', inside: (s) => s.phase === 'ready' },
  { step: 'releaseLease', hold: { activity: 'releaseLease', ms: 1500 }, complete: true },
];

it.each(cases)(
  'cancel during $step: the lease is released, nothing leaks',
  async (c) => {
    const companyId = uniqueId('co');
    const env = await h.admin.createEnvironment({
      companyId,
      name: 'fake',
      driver: 'sandbox',
      config: { provider: 'fake' },
    });
    const req = runRequest({
      companyId,
      environmentId: env.id,
      ...(c.provision ? { runtimeOverlay: { provisionCommand: c.provision } } : {}),
    });
    hold = c.hold ?? null;
    const inStep = new Promise<void>((resolve) => (entered = resolve));
    try {
      await h.client.startRun(req);
      let completing: Promise<unknown> | null = null;
      if (c.complete) {
        await h.client.waitReady(companyId, req.heartbeatRunId);
        completing = h.client
          .completeRun(companyId, req.heartbeatRunId, { status: 'succeeded' })
          .catch((e: unknown) => e);
      }
      if (c.inside) {
        await until(`inside ${c.step}`, async () => {
          const state = await h.client.getRun(companyId, req.heartbeatRunId);
          return state && c.inside!(state);
        });
      } else {
        await inStep;
      }
      await h.client.cancelRun(companyId, req.heartbeatRunId);
      await runEnd(h, companyId, req.heartbeatRunId);
      await completing;
    } finally {
      hold = null;
    }
    const state = await h.client.getRun(companyId, req.heartbeatRunId);
    // A cancel sent while the workflow task runs a local activity (resolve) is seen only when that task
    // ends, after the next step was scheduled: the run may or may not have leased; if it did, it released.
    const leaseless = (await h.store.listRunLeases(companyId, req.heartbeatRunId)).length === 0;
    if (c.step !== 'resolveEnvironment') expect(leaseless).toBe(false);
    const outcomes = await audit(h, companyId, [req.heartbeatRunId], {
      leaseless: leaseless ? [req.heartbeatRunId] : [],
    });
    // A cancel that lands while a completed run releases changes nothing: the run ends completed.
    expect(outcomes.get(req.heartbeatRunId)).toBe(c.complete ? 'completed' : 'cancelled');
    expect(state?.phase).toBe(c.complete ? 'released' : 'cancelled');
    if (!leaseless) {
      const [lease] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
      expect(lease).toMatchObject({ status: 'released', cleanupStatus: 'success' });
      const released = await h.store.listActivity(companyId, { action: ACTIVITY_ACTIONS.leaseReleased });
      expect(released).toHaveLength(1);
    }
  },
  60_000,
);

it('cancel during a resolve that takes from the warm pool: the taken sandbox is released with the run', async () => {
  const companyId = uniqueId('co');
  const base = mkdtempSync(join(inject('tmpRoot'), 'cancel-pool-'));
  writeFileSync(join(base, 'main.txt'), 'code\n');
  const env = await h.admin.createEnvironment({
    companyId,
    name: 'pooled',
    driver: 'sandbox',
    config: { provider: 'fake', warmPool: { size: 1, maxIdle: '1h', base: { cwd: base, provisionCommand: 'true' } } },
  });
  const pooled = await until('a ready pooled sandbox', async () => {
    const ready = (await h.store.listPooledLeases(companyId, env.id)).filter(
      (l) => (l.metadata?.pool as { state?: string } | undefined)?.state === 'ready',
    );
    return ready.length === 1 ? ready[0]! : null;
  });
  const req = runRequest({ companyId, environmentId: env.id, cwd: base, runtimeOverlay: { provisionCommand: 'true' } });
  hold = { activity: 'resolveEnvironment', ms: 1500 };
  const inStep = new Promise<void>((resolve) => (entered = resolve));
  try {
    await h.client.startRun(req);
    await inStep;
    await h.client.cancelRun(companyId, req.heartbeatRunId);
    await runEnd(h, companyId, req.heartbeatRunId);
  } finally {
    hold = null;
  }
  // The resolve step took the pooled sandbox before the cancel was seen: the run released it.
  const [lease, ...more] = await h.store.listRunLeases(companyId, req.heartbeatRunId);
  expect(more).toHaveLength(0);
  expect(lease).toMatchObject({ id: pooled.id, status: 'released', cleanupStatus: 'success' });
  expect((await h.client.getRun(companyId, req.heartbeatRunId))?.phase).toBe('cancelled');
}, 60_000);
