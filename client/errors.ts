// The errors the client throws (every one an EnvRunError with a `code`), and the one place that turns what
// the Temporal client threw into them: every call of EnvRunClient, the orchestrator and the admin API goes
// through fromTemporal, so the same Temporal error is the same envrun error whichever call met it.
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { z } from 'zod';
import {
  EnvRunError,
  RUN_CANCELLED,
  decodeRunFailure,
  describeZodError,
  isRunCancelled,
  type Driver,
  type ErrorCode,
  type RunFailure,
} from '../contracts/index.js';

export { EnvRunError };

/** A run failed (or was cancelled): its error code and the fields every run failure carries. */
export class RunFailedError extends EnvRunError {
  override name = 'RunFailedError';
  readonly code: ErrorCode | typeof RUN_CANCELLED;
  readonly environmentId: string | null;
  readonly driver: Driver | null;
  readonly provider: string | null;

  constructor(failure: Omit<RunFailure, 'code'> & { code: ErrorCode | typeof RUN_CANCELLED }) {
    super(failure.message);
    this.code = failure.code;
    this.environmentId = failure.environmentId;
    this.driver = failure.driver;
    this.provider = failure.provider;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      environmentId: this.environmentId,
      driver: this.driver,
      provider: this.provider,
    };
  }
}

/** Bad input to the client or CLI: the message names the field; nothing was started or written. */
export class InvalidInputError extends EnvRunError {
  override name = 'InvalidInputError';
  readonly code = 'invalid_request';
}

/** Parses `value`; bad input throws InvalidInputError naming the field under `prefix`. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new InvalidInputError(describeZodError(result.error, prefix));
  return result.data;
}

/** The run (or lease) is not in a state that allows the request (e.g. complete before ready). */
export class RunStateError extends EnvRunError {
  override name = 'RunStateError';
  readonly code: 'invalid_state' | 'run_ended' = 'invalid_state';
}

/** How a run's workflow ended, as Temporal closed it. */
export type RunOutcome = 'completed' | 'failed' | 'cancelled' | 'terminated' | 'timed_out' | 'continued_as_new';

/**
 * The run already ended, so there is nothing left to cancel: `outcome` says how it ended; `detail` is the
 * run's error code when it failed, or its final status (succeeded, failed, expired) when it completed.
 */
export class RunEndedError extends RunStateError {
  override name = 'RunEndedError';
  override readonly code = 'run_ended';
  readonly outcome: RunOutcome;
  readonly detail: string | null;

  constructor(message: string, outcome: RunOutcome, detail: string | null) {
    super(message);
    this.outcome = outcome;
    this.detail = detail;
  }
}

/** No such run, environment, workspace or lease, or another company's (the two are not told apart). */
export class NotFoundError extends EnvRunError {
  override name = 'NotFoundError';
  readonly code = 'not_found';
}

/** The run's failure (or cancellation) inside whatever the Temporal client threw, else null. */
export function toRunFailedError(err: unknown): RunFailedError | null {
  const failure = decodeRunFailure(err);
  if (failure) return new RunFailedError(failure);
  if (!isRunCancelled(err)) return null;
  return new RunFailedError({
    code: RUN_CANCELLED,
    message: 'the run was cancelled',
    environmentId: null,
    driver: null,
    provider: null,
  });
}

/**
 * What a call on `what` (e.g. "run R of company C") threw, as envrun's error:
 * - a run's failure or cancellation → RunFailedError;
 * - no such workflow → NotFoundError;
 * - an update the run refused (its validator's reason: "the run is leasing, not ready") → RunStateError.
 * Anything else (the server unreachable, a timeout) is returned as it is.
 */
export function fromTemporal(err: unknown, what: string): unknown {
  if (err instanceof EnvRunError) return err;
  const failed = toRunFailedError(err);
  if (failed) return failed;
  if (err instanceof WorkflowNotFoundError) return new NotFoundError(`${what} not found`);
  if (err instanceof WorkflowUpdateFailedError && err.cause) return new RunStateError(err.cause.message);
  return err;
}
