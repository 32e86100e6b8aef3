import {
  ExecutionWorkspaceRuntimeConfig,
  RunRequestSchema,
  describeZodError,
  type Environment,
  type EnvironmentLease,
  type ExecutionWorkspace,
  type RunRequest,
} from '../contracts/index.js';
import { NO_CONTEXT, runFailure } from '../contracts/errors.js';
import { checkEnabled, checkRunPaths, checkSecretGrant, TenancyError } from '../config/tenancy.js';
import { capacityGates } from '../contracts/lease-policy.js';
import { failureContext, tenancyOf, type ActivityDeps } from './deps.js';
import type { TakePooledInput } from './pool.js';

/** What the run needs to go on: small, since it is recorded in the run's history. */
export interface ResolvedEnvironment {
  request: RunRequest;
  environment: Environment;
  /** The run realizes a workspace (EnvironmentDriver.realizes); else only its target is resolved. */
  realizes: boolean;
  /**
   * With `takeWarm`: the sandbox taken from the environment's warm pool (null: the take found none to
   * match). Absent when no take was tried here: the environment has no pool, the run realizes on request
   * or passes capacity gates first; the workflow then takes (or not) as before.
   */
  taken?: EnvironmentLease | null;
}

/** Take from the warm pool in the same step, when the run may (a local activity fewer on a warm start). */
export interface ResolveOptions {
  takeWarm?: { ttlMs: number };
}

/**
 * Step 1: the selected environment, else the execution workspace's, else the company's local environment
 * (ensured to exist). Also the edge where a workflow's input is parsed: a run started around the client
 * with bad input fails here, before anything is leased.
 */
export function createResolveEnvironment(
  deps: ActivityDeps,
  takePooled: (input: TakePooledInput) => Promise<EnvironmentLease | null>,
) {
  return async function resolveEnvironment(input: unknown, options?: ResolveOptions): Promise<ResolvedEnvironment> {
    const parsed = RunRequestSchema.safeParse(input);
    if (!parsed.success) throw runFailure('invalid_request', describeZodError(parsed.error, 'request'), NO_CONTEXT);
    const request = parsed.data;
    let executionWorkspace: ExecutionWorkspace | null = null;
    if (request.executionWorkspaceId) {
      executionWorkspace = await deps.store.getExecutionWorkspace(request.companyId, request.executionWorkspaceId);
      if (!executionWorkspace) {
        throw runFailure(
          'invalid_request',
          `request.executionWorkspaceId: execution workspace ${request.executionWorkspaceId} not found`,
          NO_CONTEXT,
        );
      }
    }
    const workspaceConfig = ExecutionWorkspaceRuntimeConfig.safeParse(executionWorkspace?.metadata?.config ?? {});
    const selectedId =
      request.environmentId ?? (workspaceConfig.success ? workspaceConfig.data.environmentId : null) ?? null;
    let environment: Environment | null;
    if (selectedId) {
      // Scoped by company: another company's environment is indistinguishable from a missing one.
      environment = await deps.store.getEnvironment(request.companyId, selectedId);
      if (!environment) {
        throw runFailure('environment_not_found', `environment ${selectedId} not found`, {
          ...NO_CONTEXT,
          environmentId: selectedId,
        });
      }
    } else {
      environment = await deps.store.ensureLocalEnvironment(request.companyId);
    }
    if (environment.status !== 'active') {
      throw runFailure(
        'environment_inactive',
        `environment ${environment.id} is ${environment.status}`,
        failureContext(deps, environment),
      );
    }
    const context = failureContext(deps, environment);
    const tenancy = tenancyOf(deps);
    try {
      checkEnabled(tenancy, environment.driver, context.provider);
      // Checked again here, not only when the environment was written: grants change, rows may be older.
      const secretRef = environment.config.privateKeySecretRef;
      if (typeof secretRef === 'string') {
        checkSecretGrant(tenancy, environment.companyId, secretRef, 'config.privateKeySecretRef');
      }
    } catch (err) {
      throw runFailure('unsupported_environment', (err as Error).message, context);
    }
    try {
      if (request.workspace) checkRunPaths(tenancy, request.companyId, request.workspace);
    } catch (err) {
      if (err instanceof TenancyError) throw runFailure('invalid_request', err.message, context);
      throw err;
    }
    const driver = deps.drivers[environment.driver];
    const realizes = driver?.realizes?.(environment) ?? Boolean(driver?.realize);
    const ttlMs = options?.takeWarm?.ttlMs;
    // The workflow takes after the gates admit it: a run that waits must not hold a warm sandbox meanwhile.
    if (
      ttlMs === undefined ||
      !environment.config.warmPool ||
      request.realize === 'on_request' ||
      capacityGates(request, environment).length > 0
    ) {
      return { request, environment, realizes };
    }
    // A retry of this step takes again, which finds the lease the first attempt took (takePooled).
    const taken = await takePooled({ request, environmentId: environment.id, ttlMs });
    return { request, environment, realizes, taken };
  };
}
