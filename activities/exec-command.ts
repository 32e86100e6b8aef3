import { Context } from '@temporalio/activity';
import {
  ExecRequestSchema,
  describeZodError,
  type DriverRealization,
  type EnvironmentLease,
  type ExecResult,
} from '../contracts/index.js';
import { currentEnvironment, driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { NO_CONTEXT, runFailure } from '../contracts/errors.js';

export interface ExecCommandInput {
  companyId: string;
  lease: EnvironmentLease;
  record: DriverRealization | null;
  request: unknown;
}

/**
 * Runs one command in a ready run's target, on the worker that holds its resource (the run's host queue
 * for host-bound leases). Arguments reach the driver as data, never through a shell of ours; the command
 * sees only the environment given; its output is kept to the driver's cap. A command is not idempotent:
 * the activity is never retried. It heartbeats every second, so a cancel (the run releasing its lease)
 * reaches it within the worker's heartbeat throttle: the driver kills the command and the step ends cancelled.
 */
export function createExecCommand(deps: ActivityDeps) {
  return async function execCommand(input: ExecCommandInput): Promise<ExecResult> {
    const parsed = ExecRequestSchema.safeParse(input.request);
    if (!parsed.success) throw runFailure('invalid_request', describeZodError(parsed.error, 'exec'), NO_CONTEXT);
    const stored = await deps.store.getEnvironment(input.companyId, input.lease.environmentId);
    if (!stored) {
      throw runFailure('environment_not_found', `environment ${input.lease.environmentId} not found`, NO_CONTEXT);
    }
    const environment = await currentEnvironment(deps, stored);
    const driver = driverFor(deps, environment);
    const step = stepContext();
    const beat = setInterval(() => step.beat(), 1000);
    try {
      const result = await driver.execute(step, { environment, lease: input.lease, record: input.record }, parsed.data);
      // Cancelled (the run is releasing its lease): the driver has ended the command; the step ends cancelled.
      const cancelled = Context.current().cancellationSignal;
      if (cancelled.aborted) throw cancelled.reason;
      return result;
    } catch (err) {
      if (Context.current().cancellationSignal.aborted) throw err;
      throw runFailure('transport_resolution_failed', (err as Error).message, failureContext(deps, environment), {
        nonRetryable: true,
      });
    } finally {
      clearInterval(beat);
    }
  };
}
