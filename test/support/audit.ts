// The audit every load or fault case ends with: every run accounted for (ready, completed, or failed with
// a declared code), one lease per run (besides leases lost with a dead host, each naming it), no active
// lease left, no leaked provider folder, no duplicate activity-log entry.
import { CancelledFailure } from '@temporalio/common';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { ERROR_CODES, RUN_CANCELLED, runWorkflowId } from '../../contracts/index.js';
import type { Harness } from './harness.js';

export interface AuditOptions {
  /** Runs that never reached acquire (cancelled while resolving, say): they must have no lease at all. */
  leaseless?: string[];
}

export type RunOutcome = 'completed' | 'ready' | 'cancelled' | `failed:${string}`;

/** How each run ended, from Temporal: completed, still held at ready, or failed with its error code. */
export async function runOutcomes(
  h: Pick<Harness, 'client'>,
  companyId: string,
  runIds: string[],
): Promise<Map<string, RunOutcome>> {
  const outcomes = new Map<string, RunOutcome>();
  for (const run of runIds) {
    const handle = h.client.temporal.workflow.getHandle(runWorkflowId(companyId, run));
    const { status } = await handle.describe();
    if (status.name === 'RUNNING') {
      const state = await h.client.getRun(companyId, run);
      outcomes.set(run, state?.phase === 'ready' ? 'ready' : `failed:still ${state?.phase}`);
      continue;
    }
    const end = await handle.result().then(
      () => null,
      (e: unknown) => e as { cause?: unknown },
    );
    if (end === null) outcomes.set(run, 'completed');
    else if (end.cause instanceof CancelledFailure) outcomes.set(run, 'cancelled');
    else outcomes.set(run, `failed:${(end.cause as { type?: string } | undefined)?.type ?? 'unknown'}`);
  }
  return outcomes;
}

export async function audit(
  h: Pick<Harness, 'client' | 'store' | 'fakeRoot'>,
  companyId: string,
  runIds: string[],
  options: AuditOptions = {},
): Promise<Map<string, RunOutcome>> {
  const outcomes = await runOutcomes(h, companyId, runIds);
  const known = new Set<string>([...ERROR_CODES, RUN_CANCELLED]);
  for (const [run, outcome] of outcomes) {
    if (outcome.startsWith('failed:'))
      expect(known.has(outcome.slice('failed:'.length)), `${run} ended ${outcome}`).toBe(true);
  }
  const all = await h.store.listLeases(companyId);
  // A lease lost with its host ends `lost`, names the host, and keeps its cleanup pending for its return.
  for (const l of all.filter((x) => x.status === 'lost')) {
    expect(typeof l.metadata?.hostId, `host of lost lease ${l.id}`).toBe('string');
    expect(l.failureReason).toContain('environment_host_lost');
  }
  const leases = all.filter((l) => l.status !== 'lost');
  const perRun = new Map<string, number>();
  for (const l of leases) perRun.set(l.heartbeatRunId ?? '', (perRun.get(l.heartbeatRunId ?? '') ?? 0) + 1);
  const leaseless = new Set(options.leaseless ?? []);
  const lostOf = (run: string) => all.filter((l) => l.status === 'lost' && l.heartbeatRunId === run).length;
  for (const run of runIds) {
    // A run whose host died ends environment_host_lost with only the lease lost there.
    const hostLost = outcomes.get(run) === 'failed:environment_host_lost' && lostOf(run) > 0;
    expect(perRun.get(run) ?? 0, `leases of ${run}`).toBe(leaseless.has(run) || hostLost ? 0 : 1);
  }
  expect(leases.filter((l) => l.status === 'active' && outcomes.get(l.heartbeatRunId ?? '') !== 'ready')).toEqual([]);
  const leaseRoot = join(h.fakeRoot, 'leases');
  const leftovers = existsSync(leaseRoot)
    ? runIds.filter(
        (r) =>
          outcomes.get(r) !== 'ready' && existsSync(join(leaseRoot, r)) && readdirSync(join(leaseRoot, r)).length > 0,
      )
    : [];
  expect(leftovers).toEqual([]);
  const log = await h.store.listActivity(companyId);
  const keys = log.map((e) => `${e.action}/${e.entityId}`);
  expect(keys.filter((k, i) => keys.indexOf(k) !== i)).toEqual([]);
  return outcomes;
}
