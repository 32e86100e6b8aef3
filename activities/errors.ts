import { ApplicationFailure } from '@temporalio/common';
import { NonRetryableError } from '../drivers/errors.js';
import { NON_RETRYABLE_CODES, type Driver, type ErrorCode, type RunFailure } from '../contracts/index.js';

export interface FailureContext {
  environmentId: string | null;
  driver: Driver | null;
  provider: string | null;
}

export const NO_CONTEXT: FailureContext = { environmentId: null, driver: null, provider: null };

/**
 * The one way an activity reports a run failure: an ApplicationFailure whose type is the error code and
 * whose details are `{code, message, environmentId, driver, provider}`. Retryable unless the code is one
 * where a retry cannot help (or the caller says so).
 */
export function runFailure(
  code: ErrorCode,
  message: string,
  context: FailureContext,
  options: { nonRetryable?: boolean; cause?: Error } = {},
): ApplicationFailure {
  const details: RunFailure = { code, message, ...context };
  return ApplicationFailure.create({
    type: code,
    message,
    details: [details],
    nonRetryable: options.nonRetryable ?? NON_RETRYABLE_CODES.includes(code),
    cause: options.cause,
  });
}

/** Wraps anything thrown by a step into the step's code, keeping a failure that already has a code. */
export function asRunFailure(err: unknown, code: ErrorCode, context: FailureContext): ApplicationFailure {
  if (err instanceof ApplicationFailure && err.type && (err.details?.[0] as RunFailure | undefined)?.code) return err;
  const message = err instanceof Error ? err.message : String(err);
  return runFailure(code, message, context, { nonRetryable: err instanceof NonRetryableError });
}
