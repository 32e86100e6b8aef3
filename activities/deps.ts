import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Driver, Environment } from '../contracts/index.js';
import type { DriverRegistry } from '../drivers/registry.js';
import type { EnvironmentDriver, StepContext } from '../drivers/types.js';
import { runFailure, type FailureContext } from '../contracts/errors.js';
import type { Store } from '../store/store.js';
import { loadTenancy, type Tenancy } from '../config/tenancy.js';

export interface ActivityDeps {
  store: Store;
  /** For activities that look at other workflows (the reaper). */
  temporal?: Client;
  drivers: DriverRegistry;
  clock?: () => Date;
  /** Default provision timeout when neither the request nor the environment sets one. */
  provisionTimeoutMs?: number;
  /** Workspace roots, secret grants, enabled drivers and providers; read from the environment when absent. */
  tenancy?: Tenancy;
  /** This worker's host (ENVRUN_HOST_ID): leases on host-bound resources record it. */
  hostId?: string;
  /** A host whose queue saw no poll for this long is gone (default: ENVRUN_HOST_STALE_MS, else 90 s). */
  hostStaleMs?: number;
}

let processTenancy: Tenancy | undefined;

/** The deployment's tenancy settings: the deps' own, else the process environment's (read once). */
export function tenancyOf(deps: ActivityDeps): Tenancy {
  return deps.tenancy ?? (processTenancy ??= loadTenancy());
}

export function failureContext(deps: ActivityDeps, environment: Environment): FailureContext {
  return { environmentId: environment.id, driver: environment.driver, provider: driverProvider(deps, environment) };
}

function driverProvider(deps: ActivityDeps, environment: Environment): string | null {
  try {
    return deps.drivers[environment.driver]?.providerOf(environment) ?? null;
  } catch {
    return null;
  }
}

export function driverFor(deps: ActivityDeps, environment: Environment): EnvironmentDriver {
  const driver = deps.drivers[environment.driver as Driver];
  if (!driver) {
    throw runFailure(
      'unsupported_environment',
      `driver "${environment.driver}" is not available in this worker`,
      failureContext(deps, environment),
    );
  }
  return driver;
}

/** The step context of the running activity: attempt, idempotency key (workflow id), cancellation, progress. */
export function stepContext(): StepContext & { beat(): void } {
  const ctx = Context.current();
  let last: { lastLine: string } | undefined;
  return {
    attempt: ctx.info.attempt,
    idempotencyKey: ctx.info.workflowExecution?.workflowId ?? ctx.info.activityId,
    signal: ctx.cancellationSignal,
    progress: (line) => {
      last = { lastLine: line.slice(0, 200) };
      ctx.heartbeat(last);
    },
    /** Heartbeat again with the latest progress (keeps it visible, and lets a cancel arrive). */
    beat: () => ctx.heartbeat(last),
  };
}

/** The Temporal namespace and task queue of the running step: the deployment a lease belongs to. */
export function deploymentOf(): { namespace: string; taskQueue: string } {
  const { workflowNamespace, taskQueue } = Context.current().info;
  return { namespace: workflowNamespace ?? 'default', taskQueue };
}
