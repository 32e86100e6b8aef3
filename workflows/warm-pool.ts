// A warm pool: one workflow per environment whose config has `warmPool`, visible in the UI. It keeps
// `size` sandboxes acquired, realized from the base and provisioned; replaces one as soon as a run takes
// it or it fails a probe; retires one idle past `maxIdle`, or provisioned from a base that has changed
// since (its fingerprint); and retires them all and ends once the environment is archived or its pool
// removed. What it holds is in the database (the pooled lease rows): each turn starts from a fresh plan,
// so a crash, a retried step or a continue-as-new loses nothing.
import {
  condition,
  continueAsNew,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { PoolPlan } from '../activities/pool.js';
import { hostTaskQueue } from '../contracts/constants.js';
import {
  POOL_RUN_PREFIX,
  getPoolQuery,
  poolChangedSignal,
  poolTakenSignal,
  type PoolMember,
  type PoolState,
} from '../contracts/pool-messages.js';
import { NON_RETRYABLE_CODES } from '../contracts/constants.js';

export interface WarmPoolInput {
  companyId: string;
  environmentId: string;
  /** Counters carried over a continue-as-new. */
  counts?: { taken: number; filled: number; retired: number };
}

/** How often idle sandboxes are probed, and the pool looks again without being told. */
const PROBE_EVERY_MS = 5 * 60_000;
/** After a failed fill the next waits 30 s, doubling with each failure in a row up to an hour. */
const FILL_BACKOFF_MS = 30_000;
const MAX_FILL_BACKOFF_MS = 3600_000;
/** Turns between continue-as-new (each turn is a few events). */
const CONTINUE_AFTER_EVENTS = 2_000;

const { planPool } = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1m',
  scheduleToCloseTimeout: '10m',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
  summary: 'read the pool and its environment',
});

const { fillPool } = proxyActivities<Activities>({
  startToCloseTimeout: '2h',
  heartbeatTimeout: '30s',
  retry: {
    maximumAttempts: 5,
    initialInterval: '1s',
    maximumInterval: '30s',
    nonRetryableErrorTypes: [...NON_RETRYABLE_CODES],
  },
  summary: 'acquire, realize and provision a pooled sandbox',
});

/** The steps on a pooled sandbox's own host (the shared queue when it has none). */
function onHostOf(hostId: string | null) {
  const on = hostId ? { taskQueue: hostTaskQueue(workflowInfo().taskQueue, hostId), scheduleToStartTimeout: '5m' } : {};
  return proxyActivities<Activities>({
    startToCloseTimeout: '10m',
    retry: { maximumAttempts: 5, initialInterval: '1s', maximumInterval: '30s' },
    ...on,
  });
}

export async function warmPool(input: WarmPoolInput): Promise<void> {
  const { companyId, environmentId } = input;
  const counts = { taken: 0, filled: 0, retired: 0, ...input.counts };
  let woken = false;
  let plan: PoolPlan | null = null;
  let note: string | null = null;
  /** Fills in flight, by pool run id. */
  const filling = new Set<string>();
  /** Fills that ended well after the plan in hand was read: their rows may still say `filling` in it. */
  const filled = new Set<string>();
  let lastProbe = Date.now();
  let fillFailedAt = 0;
  let fillFailures = 0;

  setHandler(poolChangedSignal, () => void (woken = true));
  setHandler(poolTakenSignal, () => {
    counts.taken++;
    woken = true;
  });
  setHandler(getPoolQuery, (): PoolState => ({
    environmentId,
    size: plan?.size ?? 0,
    fingerprint: plan?.fingerprint ?? null,
    members: plan?.members ?? [],
    ...counts,
    note,
  }));

  const retire = async (member: PoolMember, reason: string) => {
    const outcome = await onHostOf(member.hostId)
      .retirePooled({ companyId, leaseId: member.leaseId, reason })
      .catch(() => 'failed' as const); // left for the next turn (or the reaper, if its host is gone)
    if (outcome === 'retired') counts.retired++;
  };

  const fill = async (fingerprint: string) => {
    const poolRunId = `${POOL_RUN_PREFIX}${uuid4()}`;
    filling.add(poolRunId);
    try {
      const member = await fillPool({ companyId, environmentId, poolRunId, fingerprint });
      if (member) {
        counts.filled++;
        filled.add(poolRunId);
      }
      note = null;
      fillFailures = 0;
    } catch (err) {
      fillFailedAt = Date.now();
      fillFailures++;
      // The step's own error (its cause), not the SDK's "activity task failed".
      const cause = (err as { cause?: Error }).cause ?? (err as Error);
      note = `${fillFailures} fill(s) failed in a row, the last: ${cause.message}`.slice(0, 500);
    } finally {
      filling.delete(poolRunId);
      woken = true;
    }
  };

  for (;;) {
    woken = false;
    plan = await planPool({ companyId, environmentId });
    const now = Date.now();
    if (!plan.active) {
      note = plan.reason;
      await Promise.all(plan.members.map((m) => retire(m, plan!.reason ?? 'pool removed')));
      if (filling.size === 0) return;
      await condition(() => filling.size === 0);
      continue; // what those fills made is retired on the next turn
    }
    const current = plan;
    const stale: Array<[PoolMember, string]> = [];
    const ready: PoolMember[] = [];
    // A fill that ended well is known only until a plan shows its row ready.
    const seenFilling = new Set(current.members.filter((m) => m.state === 'filling').map((m) => m.poolRunId));
    for (const id of [...filled]) if (!seenFilling.has(id)) filled.delete(id);
    let justFilled = 0;
    for (const m of current.members) {
      if (m.state === 'retiring') stale.push([m, 'retiring']);
      else if (m.state === 'filling' && filled.has(m.poolRunId)) justFilled++;
      else if (m.state === 'filling' && !filling.has(m.poolRunId)) stale.push([m, 'a fill that did not finish']);
      else if (m.state !== 'ready') continue;
      else if (m.fingerprint !== current.fingerprint) stale.push([m, 'the base changed']);
      else if (m.readyAt && now - Date.parse(m.readyAt) >= current.maxIdleMs) stale.push([m, 'idle past maxIdle']);
      else ready.push(m);
    }
    // More than the pool's size (its size was lowered), or more than capacity allows: the newest go.
    // A fill whose row is ready already (its completion not yet here) counts once, as ready.
    const inFlight = [...filling].filter((id) => !ready.some((m) => m.poolRunId === id)).length;
    const held = ready.length + inFlight + justFilled;
    const over = Math.max(held - current.size, current.room !== null ? -current.room : 0, 0);
    for (const m of ready.splice(Math.max(0, ready.length - over))) stale.push([m, 'more than the pool needs']);
    // Idle sandboxes are probed now and then: one whose resource is gone is replaced.
    if (now - lastProbe >= PROBE_EVERY_MS) {
      lastProbe = now;
      const alive = await Promise.all(
        ready.map((m) =>
          onHostOf(m.hostId)
            .probePooled({ companyId, leaseId: m.leaseId })
            .catch(() => false),
        ),
      );
      for (let i = ready.length - 1; i >= 0; i--) {
        if (!alive[i]) stale.push([ready.splice(i, 1)[0]!, 'failed a probe']);
      }
    }
    await Promise.all(stale.map(([m, reason]) => retire(m, reason)));

    const room = current.room === null ? Infinity : current.room;
    const missing = Math.min(current.size - (ready.length + inFlight + justFilled), room);
    const backoffMs = Math.min(FILL_BACKOFF_MS * 2 ** Math.max(0, fillFailures - 1), MAX_FILL_BACKOFF_MS);
    const backingOff = fillFailedAt > 0 && Date.now() - fillFailedAt < backoffMs;
    if (missing > 0 && !backingOff) {
      for (let i = 0; i < missing; i++) void fill(current.fingerprint!);
    } else if (missing > 0 && current.room !== null && current.room <= 0) {
      note = "at the environment's maxConcurrentLeases: the pool fills again when runs end";
    }

    const info = workflowInfo();
    if ((info.historyLength >= CONTINUE_AFTER_EVENTS || info.continueAsNewSuggested) && filling.size === 0) {
      await continueAsNew<typeof warmPool>({ companyId, environmentId, counts });
    }
    // The next turn: told (a take, a change, a fill done), the next idle deadline, or the probe interval.
    const deadlines = ready
      .map((m) => (m.readyAt ? Date.parse(m.readyAt) + current.maxIdleMs - Date.now() : PROBE_EVERY_MS))
      .concat(
        PROBE_EVERY_MS - (Date.now() - lastProbe),
        backingOff ? fillFailedAt + backoffMs - Date.now() : PROBE_EVERY_MS,
      );
    await condition(() => woken, Math.max(1000, Math.min(...deadlines)));
  }
}
