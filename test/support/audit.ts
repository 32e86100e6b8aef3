// The audit every load or fault case ends with: every run accounted for, one lease per run, no active
// lease left, no leaked provider folder, no duplicate activity-log entry.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Harness } from './harness.js';

export async function audit(h: Harness, companyId: string, runIds: string[]): Promise<void> {
  const leases = await h.store.listLeases(companyId);
  const perRun = new Map<string, number>();
  for (const l of leases) perRun.set(l.heartbeatRunId ?? '', (perRun.get(l.heartbeatRunId ?? '') ?? 0) + 1);
  for (const run of runIds) expect(perRun.get(run), `leases of ${run}`).toBe(1);
  expect(leases.filter((l) => l.status === 'active')).toEqual([]);
  const leaseRoot = join(h.fakeRoot, 'leases');
  const leftovers = existsSync(leaseRoot) ? runIds.filter((r) => existsSync(join(leaseRoot, r)) && readdirSync(join(leaseRoot, r)).length > 0) : [];
  expect(leftovers).toEqual([]);
  const log = await h.store.listActivity(companyId);
  const keys = log.map((e) => `${e.action}/${e.entityId}`);
  expect(new Set(keys).size).toBe(keys.length);
}
