// Every step's activity options, in one table, and the proxies the run workflow calls. Recorded histories
// replay against these: a step's proxy kind (local or regular activity) must not change without a patch.
import {
  ActivityCancellationType,
  proxyActivities,
  proxyLocalActivities,
  type ActivityOptions,
  type LocalActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { NON_RETRYABLE_CODES } from '../contracts/constants.js';

const nonRetryableErrorTypes = [...NON_RETRYABLE_CODES];

/** A regular activity's options: each step retries on its own, so one flaky call does not fail the run. */
type StepLimits = { timeout: string; attempts: number; initial?: string };

function activity(o: StepLimits & Partial<ActivityOptions>): ActivityOptions {
  const { timeout, attempts, initial, ...rest } = o;
  return {
    startToCloseTimeout: timeout,
    // attempts 0: no attempt limit (the timeouts bound it).
    retry: {
      ...(attempts ? { maximumAttempts: attempts } : {}),
      initialInterval: initial ?? '200ms',
      backoffCoefficient: 2,
      maximumInterval: '20s',
      nonRetryableErrorTypes,
    },
    ...rest,
  };
}

/**
 * A short database step as a local activity: it runs in the worker that holds the workflow task and is
 * recorded as a marker, with no task queue round trip. A retry of any of them is harmless (reads,
 * idempotent upserts, event-keyed log rows). They retry through a database outage for `window`, not a
 * fixed few attempts, and a cancelled run waits for one in flight to finish before it releases.
 */
function dbStep(summary: string, window: string): LocalActivityOptions {
  return {
    startToCloseTimeout: '30s',
    scheduleToCloseTimeout: window,
    localRetryThreshold: '5s',
    retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '10s', nonRetryableErrorTypes },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    summary,
  };
}

/**
 * On this attempt a provider that still fails to release is recorded (cleanupStatus: failed) instead of
 * retried; the reaper tries it again later.
 */
export const RELEASE_ATTEMPTS = 5;

/**
 * Each step's options by step name: `activity` when it runs as a regular activity, `local` when it runs as
 * a local one. The database steps have both: runs started before they became local keep the regular ones.
 */
export const STEP_OPTIONS = {
  resolveEnvironment: {
    activity: { ...activity({ timeout: '30s', attempts: 5 }), summary: 'resolve environment' },
    local: dbStep('resolve environment', '5m'),
  },
  requestSlot: {
    activity: { ...activity({ timeout: '30s', attempts: 10 }), summary: 'join capacity queue' },
  },
  acquireLease: {
    activity: activity({
      timeout: '2m',
      attempts: 5,
      initial: '500ms',
      // Wait for a cancelled acquire to really stop, so release never races a resource still being made.
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'acquire lease',
    }),
  },
  realizeWorkspace: {
    activity: activity({
      timeout: '2h',
      attempts: 3,
      initial: '1s',
      heartbeatTimeout: '20s',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'realize workspace',
    }),
  },
  persistMetadata: {
    activity: { ...activity({ timeout: '30s', attempts: 10 }), summary: 'persist realization metadata' },
    local: dbStep('persist realization metadata', '10m'),
  },
  resolveTarget: {
    activity: activity({
      timeout: '1m',
      attempts: 3,
      initial: '500ms',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'resolve execution target',
    }),
    /** Only for drivers whose target is a check on this host (ResolvedEnvironment.localTarget). */
    local: {
      startToCloseTimeout: '1m',
      retry: { maximumAttempts: 3, initialInterval: '500ms', backoffCoefficient: 2, nonRetryableErrorTypes },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'resolve execution target',
    },
  },
  logActivity: {
    activity: { ...activity({ timeout: '30s', attempts: 10 }), summary: 'log activity' },
    local: dbStep('log activity', '10m'),
  },
  renewLease: {
    activity: { ...activity({ timeout: '30s', attempts: 10 }), summary: 'renew lease' },
    local: dbStep('renew lease', '2m'),
  },
  releaseLease: {
    // Release retries a database outage for up to half an hour; see RELEASE_ATTEMPTS for a failing provider.
    activity: activity({
      timeout: '5m',
      attempts: 0,
      initial: '500ms',
      scheduleToCloseTimeout: '30m',
      summary: 'release lease',
    }),
  },
  execCommand: {
    // A command is not idempotent: one attempt; the request's own timeout bounds it (at most 24 h).
    activity: {
      startToCloseTimeout: '25h',
      heartbeatTimeout: '30s',
      retry: { maximumAttempts: 1 },
      cancellationType: ActivityCancellationType.TRY_CANCEL,
      summary: 'run a command in the target',
    },
  },
} satisfies { [K in keyof Activities]?: { activity: ActivityOptions; local?: LocalActivityOptions } };

type Step = keyof typeof STEP_OPTIONS;
type LocalStep = { [K in Step]: (typeof STEP_OPTIONS)[K] extends { local: LocalActivityOptions } ? K : never }[Step];

function asActivity<K extends Step>(step: K, onHost?: { taskQueue: string; scheduleToStartTimeout?: string }) {
  return proxyActivities<Activities>({ ...STEP_OPTIONS[step].activity, ...onHost })[step];
}

/**
 * How long a step waits for its host to pick it up before the run counts the host as gone
 * (environment_host_lost). Release has no such limit: it waits for the host to come back.
 */
const HOST_PICKUP = '5m';
function asLocalActivity<K extends LocalStep>(step: K) {
  return proxyLocalActivities<Activities>(STEP_OPTIONS[step].local)[step];
}

/** The short database steps as local activities (runs started with the 'envrun-local-steps' patch). */
export const dbSteps = {
  resolveEnvironment: asLocalActivity('resolveEnvironment'),
  persistMetadata: asLocalActivity('persistMetadata'),
  logActivity: asLocalActivity('logActivity'),
  renewLease: asLocalActivity('renewLease'),
};
export type DbSteps = typeof dbSteps;

/** The same steps as regular activities, for runs started before they became local. */
export const legacyDbSteps: DbSteps = {
  resolveEnvironment: asActivity('resolveEnvironment'),
  persistMetadata: asActivity('persistMetadata'),
  logActivity: asActivity('logActivity'),
  renewLease: asActivity('renewLease'),
};

/** The steps that are always regular activities: they wait on a queue, a provider or a remote host. */
export const activitySteps = {
  requestSlot: asActivity('requestSlot'),
  acquireLease: asActivity('acquireLease'),
  realizeWorkspace: asActivity('realizeWorkspace'),
  resolveTarget: asActivity('resolveTarget'),
  releaseLease: asActivity('releaseLease'),
};

export interface HostSteps extends Pick<typeof activitySteps, 'realizeWorkspace' | 'resolveTarget' | 'releaseLease'> {
  execCommand: ReturnType<typeof asActivity<'execCommand'>>;
}

/**
 * The steps on a lease's resource, on the queue of the worker host that holds it (null: the shared queue,
 * for resources any worker reaches).
 */
export function hostSteps(taskQueue: string | null): HostSteps {
  if (!taskQueue) return { ...activitySteps, execCommand: asActivity('execCommand') };
  const pickup = { taskQueue, scheduleToStartTimeout: HOST_PICKUP };
  return {
    realizeWorkspace: asActivity('realizeWorkspace', pickup),
    resolveTarget: asActivity('resolveTarget', pickup),
    releaseLease: asActivity('releaseLease', { taskQueue }),
    execCommand: asActivity('execCommand', pickup),
  };
}

/** Target resolution as a local activity, for drivers whose target is a check on this host. */
export const localResolveTarget = asLocalActivity('resolveTarget');
