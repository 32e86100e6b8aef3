// The orchestrator's errors in Paperclip's shape: its EnvironmentErrorCode set, EnvironmentRunError, and the
// mapping of what a step threw (envrun's run failures, anything else) to the step's code.
import { EnvRunError, type RunState } from '../../contracts/index.js';
import { InvalidInputError, RunFailedError } from '../errors.js';

/** Paperclip's EnvironmentErrorCode set: the codes an EnvironmentRunError carries. */
const ENVIRONMENT_ERROR_CODES = [
  'environment_not_found',
  'environment_inactive',
  'unsupported_environment',
  'unsupported_adapter_environment',
  'probe_failed',
  'lease_acquire_failed',
  'workspace_realization_failed',
  'transport_resolution_failed',
  'lease_release_failed',
  'lease_cleanup_failed',
] as const;
export type EnvironmentErrorCode = (typeof ENVIRONMENT_ERROR_CODES)[number];

/**
 * A failed step, in the shape Paperclip's orchestrator throws: one of its codes, the environment, driver and
 * provider when known. A failure of the run keeps envrun's own error (RunFailedError, its `code` envrun's)
 * as `cause`: a code Paperclip does not have becomes the step's (`lease_conflict` → `lease_acquire_failed`;
 * `environment_host_lost`, `invalid_request` or a cancelled run → the failed step's code).
 */
export class EnvironmentRunError extends EnvRunError {
  override name = 'EnvironmentRunError';
  readonly code: EnvironmentErrorCode;
  readonly environmentId: string | undefined;
  readonly driver: string | undefined;
  readonly provider: string | undefined;

  constructor(
    code: EnvironmentErrorCode,
    message: string,
    details: { environmentId?: string; driver?: string; provider?: string; cause?: unknown } = {},
  ) {
    super(message, 'cause' in details ? { cause: details.cause } : undefined);
    this.code = code;
    this.environmentId = details.environmentId;
    this.driver = details.driver;
    this.provider = details.provider;
  }

  /** The run's failure as the error of the step that met it. */
  static fromRun(error: RunFailedError, step: EnvironmentErrorCode): EnvironmentRunError {
    const code =
      error.code === 'lease_conflict'
        ? 'lease_acquire_failed'
        : (ENVIRONMENT_ERROR_CODES as readonly string[]).includes(error.code)
          ? (error.code as EnvironmentErrorCode)
          : step;
    return new EnvironmentRunError(code, error.message, {
      environmentId: error.environmentId ?? undefined,
      driver: error.driver ?? undefined,
      provider: error.provider ?? undefined,
      cause: error,
    });
  }
}

export function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What a step threw, as Paperclip's orchestrator would throw it; input errors stay as they are. */
export function stepError(err: unknown, step: EnvironmentErrorCode, context: RunState | null = null): unknown {
  if (err instanceof EnvironmentRunError || err instanceof InvalidInputError) return err;
  if (err instanceof RunFailedError) return EnvironmentRunError.fromRun(err, step);
  return new EnvironmentRunError(step, message(err), {
    environmentId: context?.environmentId ?? undefined,
    driver: context?.driver ?? undefined,
    provider: context?.provider ?? undefined,
    cause: err,
  });
}
