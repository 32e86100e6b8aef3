// How a run's workflow ended, as Temporal closed it: what EnvRunClient.cancelRun refuses an ended run with.
import type { WorkflowExecutionStatusName, WorkflowHandle } from '@temporalio/client';
import { SEARCH_ATTRIBUTES, type RunRequestInput, type RunWorkflowResult } from '../contracts/index.js';
import { RunEndedError, type RunOutcome } from './errors.js';

/** The run workflow's signature (workflows/environment-run.ts), for typed handles. */
export type EnvironmentRunWorkflow = (input: RunRequestInput) => Promise<RunWorkflowResult>;

/** Temporal's closed statuses, as a run's outcome; any other status (running, paused) is an open run. */
const CLOSED: Partial<Record<WorkflowExecutionStatusName, RunOutcome>> = {
  COMPLETED: 'completed',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  TERMINATED: 'terminated',
  TIMED_OUT: 'timed_out',
  CONTINUED_AS_NEW: 'continued_as_new',
};

export interface EndedAs {
  outcome: RunOutcome;
  /** The error code of a failed run, the final status of a completed one. */
  detail: string | null;
}

/** How the run's workflow ended (with its error code, or its completion's status), or null while it is open. */
export async function endedAs(handle: WorkflowHandle<EnvironmentRunWorkflow>): Promise<EndedAs | null> {
  const description = await handle.describe();
  const outcome = CLOSED[description.status.name];
  if (!outcome) return null;
  if (outcome === 'failed') {
    return { outcome, detail: description.typedSearchAttributes.get(SEARCH_ATTRIBUTES.errorCode) ?? null };
  }
  if (outcome === 'completed') {
    const status = await handle.result().then(
      (r) => r.status,
      () => null,
    );
    return { outcome, detail: status };
  }
  return { outcome, detail: null };
}

/** The refusal of a cancel: `what` (e.g. "run R of company C") already ended, and how. */
export function nothingToCancel(what: string, { outcome, detail }: EndedAs): RunEndedError {
  const how = detail ? `${outcome}, ${outcome === 'failed' ? 'error' : 'status'} ${detail}` : outcome;
  return new RunEndedError(`${what} already ended, nothing to cancel: ${how}`, outcome, detail);
}
