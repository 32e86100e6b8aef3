// A run that has ended is never reported as ready: its lease is released and its target gone, so waiting
// for it (or starting it again and waiting) says how it ended instead of returning the old target.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunFailedError, RunEndedError } from '../../client/errors.js';
import { createHarness, uniqueId, type Harness } from '../support/harness.js';
import { runRequest } from '../support/runs.js';

let h: Harness;
beforeAll(async () => {
  h = await createHarness();
});
afterAll(async () => {
  await h?.close();
});

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => new Error('expected an error, got a result'),
    (e: unknown) => e,
  );
}

describe('waitReady and startRunAndWaitReady on an ended run', () => {
  it('completed: RunEndedError with the completion status, from both calls', async () => {
    const req = runRequest({ companyId: uniqueId('co') });
    await h.client.startRunAndWaitReady(req);
    await h.client.completeRun(req.companyId, req.heartbeatRunId, { status: 'succeeded' });
    for (const call of [
      () => h.client.waitReady(req.companyId, req.heartbeatRunId),
      () => h.client.startRunAndWaitReady(req),
    ]) {
      const err = await caught(call());
      expect(err).toBeInstanceOf(RunEndedError);
      expect(err).toMatchObject({ outcome: 'completed', detail: 'succeeded' });
    }
  });

  it('expired: RunEndedError whose detail says expired', async () => {
    const req = runRequest({ companyId: uniqueId('co'), leaseTtlMs: 1000 });
    await h.client.startRunAndWaitReady(req);
    await h.client.waitEnded(req.companyId, req.heartbeatRunId);
    const err = await caught(h.client.waitReady(req.companyId, req.heartbeatRunId));
    expect(err).toBeInstanceOf(RunEndedError);
    expect(err).toMatchObject({ outcome: 'completed', detail: 'expired' });
  });

  it('cancelled: the run_cancelled error, not the old target', async () => {
    const req = runRequest({ companyId: uniqueId('co') });
    await h.client.startRunAndWaitReady(req);
    await h.client.cancelRun(req.companyId, req.heartbeatRunId);
    const err = await caught(h.client.startRunAndWaitReady(req));
    expect(err).toBeInstanceOf(RunFailedError);
    expect((err as RunFailedError).code).toBe('run_cancelled');
  });
});
