// The worker's sink for the egress proxy's audit: rows into the store, denied connections counted on the
// runtime's meter (`envrun_egress_denied`, by phase and reason), also when the store refuses the write.
import type { MetricMeter, MetricTags } from '@temporalio/common';
import { Runtime } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EgressAuditRow } from '../../drivers/egress/broker.js';
import { Store } from '../../store/store.js';
import { EGRESS_DENIED_METRIC, egressAuditSink } from '../../worker/egress-audit.js';
import { freshDatabase, uniqueId } from '../support/harness.js';

/** A meter that keeps what its counters were given. */
function recordingMeter() {
  const added: Array<{ name: string; value: number; tags: MetricTags | undefined }> = [];
  const created: string[] = [];
  const meter = {
    createCounter: (name: string) => {
      created.push(name);
      return { add: (value: number, tags?: MetricTags) => added.push({ name, value, tags }) };
    },
  } as unknown as MetricMeter;
  return { meter, added, created };
}

let db: Awaited<ReturnType<typeof freshDatabase>>;
let store: Store;
beforeAll(async () => {
  db = await freshDatabase();
  store = new Store(db.db);
});
afterAll(async () => {
  await db?.close();
});

describe('egress audit sink', () => {
  const companyId = uniqueId('co');
  const heartbeatRunId = uniqueId('run');
  const row = (over: Partial<EgressAuditRow>): EgressAuditRow => ({
    companyId,
    heartbeatRunId,
    leaseId: randomUUID(),
    environmentId: 'env-1',
    phase: 'run',
    host: 'example.org',
    port: 443,
    verdict: 'allowed',
    reason: null,
    connections: 4,
    bytesUp: 1,
    bytesDown: 2,
    firstAt: new Date(Date.UTC(2026, 0, 1)),
    lastAt: new Date(Date.UTC(2026, 0, 1)),
    ...over,
  });

  it('records the rows and counts each denied connection by phase and reason', async () => {
    const { meter, added, created } = recordingMeter();
    const sink = egressAuditSink(store, { meter: () => meter });
    await sink([row({})]);
    expect(created).toEqual([]); // no denial: no counter yet
    await sink([
      row({ verdict: 'denied', reason: 'not_listed', connections: 3 }),
      row({ verdict: 'denied', reason: 'private_address', phase: 'provision', connections: 1 }),
    ]);
    expect(created).toEqual([EGRESS_DENIED_METRIC]);
    expect(added).toEqual([
      { name: EGRESS_DENIED_METRIC, value: 3, tags: { phase: 'run', reason: 'not_listed' } },
      { name: EGRESS_DENIED_METRIC, value: 1, tags: { phase: 'provision', reason: 'private_address' } },
    ]);
    const listed = await store.listEgress(companyId, heartbeatRunId);
    expect(listed.map((e) => [e.phase, e.verdict, e.reason, e.connections])).toEqual([
      ['provision', 'denied', 'private_address', 1],
      ['run', 'allowed', null, 4],
      ['run', 'denied', 'not_listed', 3],
    ]);
    expect(await store.listActivity(companyId, { action: 'environment.egress_denied' })).toHaveLength(2);
  });

  it('counts denials even when the store write fails, and reports the failure to its caller', async () => {
    const { meter, added } = recordingMeter();
    const failing = { recordEgress: () => Promise.reject(new Error('store down')) };
    const sink = egressAuditSink(failing, { meter: () => meter });
    await expect(sink([row({ verdict: 'denied', reason: 'not_listed', connections: 2 })])).rejects.toThrow(
      'store down',
    );
    expect(added.map((a) => a.value)).toEqual([2]);
  });

  it("the Temporal runtime's meter makes the counter outside any activity or workflow", () => {
    // SDK 1.24: Runtime.metricMeter, the meter of the process's Runtime (its Prometheus endpoint when set).
    const counter = Runtime.instance().metricMeter.createCounter(EGRESS_DENIED_METRIC, 'connections');
    expect(() => counter.add(1, { phase: 'run', reason: 'not_listed' })).not.toThrow();
  });
});
