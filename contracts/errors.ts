// The base of every error envrun throws, and the one codec of a run's failure: an activity encodes it into
// a Temporal ApplicationFailure (type: the error code; details: the RunFailure), the workflow and the
// client decode it back. Workflow code imports this file: no Node module, no zod.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { NON_RETRYABLE_CODES, RUN_CANCELLED, isErrorCode, type ErrorCode } from './constants.js';
import type { RunFailure } from './common.js';

/**
 * Every error envrun throws extends this one: `code` names the kind of failure, stable for programs (the
 * CLI prints it, with --json as `error.code`). The subclasses add what their kind carries.
 */
export abstract class EnvRunError extends Error {
  abstract readonly code: string;
}

/** A failure no retry can fix (bad config, a missing binary, an off-contract reply): the step fails at once. */
export class NonRetryableError extends EnvRunError {
  override name = 'NonRetryableError';
  override readonly code: string = 'non_retryable';
}

/** What a run failure names besides its code and message. */
export type FailureContext = Pick<RunFailure, 'environmentId' | 'driver' | 'provider'>;

export const NO_CONTEXT: FailureContext = { environmentId: null, driver: null, provider: null };

/**
 * A run failure as Temporal carries it: an ApplicationFailure whose type is the error code and whose
 * details are `[{code, message, environmentId, driver, provider}]`. Retryable unless the code is one where
 * a retry cannot help (or the caller says so).
 */
export function encodeRunFailure(
  failure: RunFailure,
  options: { nonRetryable?: boolean; cause?: Error } = {},
): ApplicationFailure {
  const { code, message, environmentId, driver, provider } = failure;
  return ApplicationFailure.create({
    type: code,
    message,
    details: [{ code, message, environmentId, driver, provider } satisfies RunFailure],
    nonRetryable: options.nonRetryable ?? NON_RETRYABLE_CODES.includes(code),
    cause: options.cause,
  });
}

/** A step's failure with its code, message and context: what the activities throw. */
export function runFailure(
  code: ErrorCode,
  message: string,
  context: FailureContext,
  options: { nonRetryable?: boolean; cause?: Error } = {},
): ApplicationFailure {
  const { environmentId, driver, provider } = context;
  return encodeRunFailure({ code, message, environmentId, driver, provider }, options);
}

/**
 * Wraps anything a step threw into the step's code, keeping a failure that already has one. A
 * NonRetryableError (or any of its kinds) fails the step at once.
 */
export function asRunFailure(err: unknown, code: ErrorCode, context: FailureContext): ApplicationFailure {
  if (err instanceof ApplicationFailure && decodeRunFailure(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return runFailure(code, message, context, { nonRetryable: err instanceof NonRetryableError });
}

/** How deep a run failure may sit in the causes (an activity failure in an update failure in …). */
const MAX_DEPTH = 6;

function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let cur = err; cur && chain.length < MAX_DEPTH; cur = (cur as { cause?: unknown }).cause) chain.push(cur);
  return chain;
}

/**
 * The run failure inside what Temporal threw (an activity, update or workflow failure wraps it), or null
 * when there is none. Fields its details leave out come from `context`.
 */
export function decodeRunFailure(err: unknown, context: FailureContext = NO_CONTEXT): RunFailure | null {
  for (const cur of causes(err)) {
    if (!(cur instanceof ApplicationFailure)) continue;
    const details = cur.details?.[0] as Partial<RunFailure> | undefined;
    const code = isErrorCode(details?.code) ? details.code : isErrorCode(cur.type) ? cur.type : null;
    if (!code) continue;
    return {
      code,
      message: details?.message ?? cur.message,
      environmentId: details?.environmentId ?? context.environmentId,
      driver: details?.driver ?? context.driver,
      provider: details?.provider ?? context.provider,
    };
  }
  return null;
}

/** The failure of a run cancelled before it got what a caller waits for (type `run_cancelled`). */
export function encodeRunCancelled(message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: RUN_CANCELLED, message, nonRetryable: true });
}

/** Whether what Temporal threw says the run was cancelled. */
export function isRunCancelled(err: unknown): boolean {
  return causes(err).some(
    (cur) =>
      cur instanceof CancelledFailure ||
      (cur instanceof Error && cur.name === 'CancelledFailure') ||
      (cur instanceof ApplicationFailure && cur.type === RUN_CANCELLED),
  );
}
