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
 * a local one (a short database step, or a check that needs no host).
 */
export const STEP_OPTIONS = {
  resolveEnvironment: { local: dbStep('resolve environment', '5m') },
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
  prepareWorkspace: {
    activity: activity({
      timeout: '2h',
      attempts: 3,
      initial: '1s',
      heartbeatTimeout: '20s',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'realize workspace, persist it, resolve the execution target',
    }),
  },
  renewLease: { local: dbStep('renew lease', '2m') },
  hostAlive: { local: dbStep('check that the resource host is alive', '2m') },
  markLeaseLost: { local: dbStep('record the lease as lost with its host', '10m') },
  settleCommand: { local: dbStep('record how a command ended when its step could not', '10m') },
  takePooled: { local: dbStep('take a warm sandbox from the pool', '2m') },
  releaseLease: {
    // Release retries a database outage for up to half an hour; see RELEASE_ATTEMPTS for a failing provider.
    activity: activity({
      timeout: '5m',
      attempts: 0,
      initial: '500ms',
      scheduleToCloseTimeout: '30m',
      heartbeatTimeout: '20s',
      summary: 'release lease',
    }),
  },
  execCommand: {
    // A command is not idempotent: one attempt; the request's own timeout bounds it (at most 24 h). A
    // cancelled command (the run releases its lease) is waited for: its sandbox is killed first.
    activity: {
      startToCloseTimeout: '25h',
      heartbeatTimeout: '30s',
      retry: { maximumAttempts: 1 },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      summary: 'run a command in the target',
    },
  },
} satisfies { [K in keyof Activities]?: { activity?: ActivityOptions; local?: LocalActivityOptions } };

type Step = keyof typeof STEP_OPTIONS;
type RegularStep = { [K in Step]: (typeof STEP_OPTIONS)[K] extends { activity: ActivityOptions } ? K : never }[Step];
type LocalStep = { [K in Step]: (typeof STEP_OPTIONS)[K] extends { local: LocalActivityOptions } ? K : never }[Step];

function asActivity<K extends RegularStep>(step: K, options?: Partial<ActivityOptions>) {
  return proxyActivities<Activities>({ ...STEP_OPTIONS[step].activity, ...options })[step];
}
function asLocalActivity<K extends LocalStep>(step: K) {
  return proxyLocalActivities<Activities>(STEP_OPTIONS[step].local)[step];
}

/** The short database steps and checks, as local activities: markers in the history, no queue round trip. */
export const dbSteps = {
  resolveEnvironment: asLocalActivity('resolveEnvironment'),
  renewLease: asLocalActivity('renewLease'),
  hostAlive: asLocalActivity('hostAlive'),
  markLeaseLost: asLocalActivity('markLeaseLost'),
  settleCommand: asLocalActivity('settleCommand'),
  takePooled: asLocalActivity('takePooled'),
};

/** The steps on the shared queue: any worker can take them. */
export const sharedSteps = {
  requestSlot: asActivity('requestSlot'),
  acquireLease: asActivity('acquireLease'),
};

/** The steps on a lease's resource. */
export interface HostSteps {
  prepareWorkspace: ReturnType<typeof asActivity<'prepareWorkspace'>>;
  releaseLease: ReturnType<typeof asActivity<'releaseLease'>>;
  execCommand: ReturnType<typeof asActivity<'execCommand'>>;
  /** As runs before the `release-ends-commands` patch had it: a cancel does not wait for the command. */
  execCommandV1: ReturnType<typeof asActivity<'execCommand'>>;
}

/**
 * The steps on a lease's resource, on the queue of the worker host that holds it, where a task not picked
 * up within `pickupMs` makes the run check whether that host is still there. With no host (null: a
 * resource any worker reaches), on the shared queue.
 */
export function hostSteps(taskQueue: string | null, pickupMs: number): HostSteps {
  const on = taskQueue ? { taskQueue, scheduleToStartTimeout: pickupMs } : {};
  return {
    prepareWorkspace: asActivity('prepareWorkspace', on),
    releaseLease: asActivity('releaseLease', on),
    execCommand: asActivity('execCommand', on),
    execCommandV1: asActivity('execCommand', { ...on, cancellationType: ActivityCancellationType.TRY_CANCEL }),
  };
}
