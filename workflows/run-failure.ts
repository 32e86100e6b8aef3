// How a run's steps fail: the host of the lease's resource found gone, and whatever a step threw turned into
// the run's failure (and the workflow's error).
import { ActivityFailure, TimeoutFailure } from '@temporalio/workflow';
import type { ErrorCode } from '../contracts/constants.js';
import {
  EnvRunError,
  decodeRunFailure,
  encodeRunCancelled,
  encodeRunFailure,
  type FailureContext,
} from '../contracts/errors.js';
import type { RunFailure } from '../contracts/index.js';
import { dbSteps, type HostSteps } from './activity-options.js';

/** The host of the run's resource is gone (no worker has polled its queue within the stale window). */
export class HostLostError extends EnvRunError {
  override name = 'HostLostError';
  readonly code = 'environment_host_lost';
  constructor(readonly hostId: string) {
    super(`worker host ${hostId}, which holds the run's resource, is gone`);
  }
}

/** Where a run's steps on the lease's resource go: the host that holds it (null: any worker). */
export interface OnHost {
  steps: HostSteps;
  hostId: string | null;
}

/**
 * Runs a step on the lease's resource. When its host does not pick the task up in time, the run asks
 * Temporal whether anyone still polls that host's queue: a busy host gets the task again, a gone one
 * raises HostLostError.
 */
export async function onHost<T>(run: OnHost, step: (steps: HostSteps) => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await step(run.steps);
    } catch (err) {
      const hostId = run.hostId;
      if (!hostId || !notPickedUp(err)) throw err;
      if (!(await dbSteps.hostAlive({ hostId }))) throw new HostLostError(hostId);
    }
  }
}

function notPickedUp(err: unknown): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START';
}

/** waitReady's or waitLeased's error when the run was cancelled first. */
export function cancelledBefore(what: 'leased' | 'ready') {
  return encodeRunCancelled(`the run was cancelled before it was ${what}`);
}

/** Turns whatever a step threw into the run's failure, keeping the code the activity chose. */
export function toRunFailure(err: unknown, step: ErrorCode, context: FailureContext): RunFailure {
  const cause = err instanceof ActivityFailure && err.cause ? err.cause : err;
  if (cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START') {
    // Only steps on a host's own queue have a pickup limit: nothing polls that queue any more.
    return {
      code: 'environment_host_lost',
      message: "the worker host that holds the run's resource is gone",
      ...context,
    };
  }
  const decoded = decodeRunFailure(cause, context);
  if (decoded) return decoded;
  const message = cause instanceof Error ? cause.message : String(cause);
  return { code: step, message, ...context };
}

/** The run's failure as the workflow's (and waitReady's) error: final, so never retried. */
export function applicationFailure(error: RunFailure) {
  return encodeRunFailure(error, { nonRetryable: true });
}
