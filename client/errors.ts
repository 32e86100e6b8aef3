import { ApplicationFailure, CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { isErrorCode, type Driver, type ErrorCode, type RunFailure } from '../contracts/index.js';

/** A run failed: the error code and the fields every failure carries. */
export class EnvRunError extends Error {
  override name = 'EnvRunError';
  readonly code: ErrorCode | 'run_cancelled';
  readonly environmentId: string | null;
  readonly driver: Driver | null;
  readonly provider: string | null;

  constructor(failure: Omit<RunFailure, 'code'> & { code: ErrorCode | 'run_cancelled' }) {
    super(failure.message);
    this.code = failure.code;
    this.environmentId = failure.environmentId;
    this.driver = failure.driver;
    this.provider = failure.provider;
  }

  toJSON(): RunFailure | Record<string, unknown> {
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
export class InvalidInputError extends Error {
  override name = 'InvalidInputError';
  readonly code = 'invalid_request' as const;
}

/** The run is not in a state that allows the request (e.g. complete before ready). */
export class RunStateError extends Error {
  override name = 'RunStateError';
}

/** How a run's workflow ended, as Temporal closed it. */
export type RunOutcome = 'completed' | 'failed' | 'cancelled' | 'terminated' | 'timed_out' | 'continued_as_new';

/**
 * The run already ended, so there is nothing left to cancel: `outcome` says how it ended; `detail` is the
 * run's error code when it failed, or its final status (succeeded, failed, expired) when it completed.
 */
export class RunEndedError extends RunStateError {
  override name = 'RunEndedError';
  readonly outcome: RunOutcome;
  readonly detail: string | null;

  constructor(message: string, outcome: RunOutcome, detail: string | null) {
    super(message);
    this.outcome = outcome;
    this.detail = detail;
  }
}

export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

/** Finds the run failure inside whatever the Temporal client threw (update failure, workflow failure). */
export function toEnvRunError(err: unknown): EnvRunError | null {
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 6; depth++) {
    if (cur instanceof ApplicationFailure) {
      const details = cur.details?.[0] as Partial<RunFailure> | undefined;
      const code = isErrorCode(details?.code)
        ? details.code
        : isErrorCode(cur.type)
          ? cur.type
          : cur.type === 'run_cancelled'
            ? 'run_cancelled'
            : null;
      if (code) {
        return new EnvRunError({
          code,
          message: details?.message ?? cur.message,
          environmentId: details?.environmentId ?? null,
          driver: details?.driver ?? null,
          provider: details?.provider ?? null,
        });
      }
    }
    if (cur instanceof CancelledFailure) {
      return cancelledError();
    }
    cur = (cur as { cause?: unknown }).cause;
  }
  if (err instanceof WorkflowFailedError && err.cause?.name === 'CancelledFailure') {
    return cancelledError();
  }
  return null;
}

function cancelledError(): EnvRunError {
  return new EnvRunError({
    code: 'run_cancelled',
    message: 'the run was cancelled',
    environmentId: null,
    driver: null,
    provider: null,
  });
}
