import {
  ExecutionTargetSchema,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type ExecutionTarget,
  type RemoteExecutionSpec,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { currentEnvironment, driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { asRunFailure, runFailure } from './errors.js';

export interface ResolveTargetInput {
  environment: Environment;
  lease: EnvironmentLease;
  record: WorkspaceRealizationRecord | null;
}

export interface ResolvedTarget {
  executionTarget: ExecutionTarget;
  remoteExecution: RemoteExecutionSpec;
}

/** The remote execution spec given to adapters is the SSH spec only (docs/design.md). */
export function toRemoteSpec(target: ExecutionTarget): RemoteExecutionSpec {
  return target && target.kind === 'remote' && target.transport === 'ssh' ? target.spec : null;
}

/** Step 5: how the agent reaches the realized workspace. */
/** Step 5 (inside the prepare step): how the agent reaches the realized workspace. */
export async function resolveCurrentTarget(deps: ActivityDeps, input: ResolveTargetInput): Promise<ResolvedTarget> {
  const context = failureContext(deps, input.environment);
  let target: ExecutionTarget;
  try {
    target = await driverFor(deps, input.environment).resolveTarget(stepContext(), input);
  } catch (err) {
    throw asRunFailure(err, 'transport_resolution_failed', context);
  }
  const checked = ExecutionTargetSchema.safeParse(target);
  if (!checked.success) {
    throw runFailure(
      'transport_resolution_failed',
      `invalid execution target: ${describeZodError(checked.error, 'target')}`,
      context,
      { nonRetryable: true },
    );
  }
  return { executionTarget: checked.data, remoteExecution: toRemoteSpec(checked.data) };
}
