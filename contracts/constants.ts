// Plain constants shared by every layer. No zod here: workflow code imports this file.

export const ERROR_CODES = [
  'environment_not_found',
  'environment_inactive',
  'unsupported_environment',
  'lease_acquire_failed',
  'lease_conflict',
  'workspace_realization_failed',
  'transport_resolution_failed',
  'lease_release_failed',
  'lease_cleanup_failed',
  'environment_host_lost',
  'invalid_request',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** Codes where a retry cannot help: activities raise them as non-retryable failures. */
export const NON_RETRYABLE_CODES: readonly ErrorCode[] = [
  'environment_not_found',
  'environment_inactive',
  'unsupported_environment',
  'lease_conflict',
  'invalid_request',
];

export const DRIVERS = ['local', 'ssh', 'sandbox', 'plugin'] as const;
export type Driver = (typeof DRIVERS)[number];

export const ENVIRONMENT_STATUSES = ['active', 'archived'] as const;
export type EnvironmentStatus = (typeof ENVIRONMENT_STATUSES)[number];

/**
 * `lost`: the worker host that held the lease's resource is gone (its queue has no pollers). The resource
 * may still exist on that host: a lost lease keeps `cleanupStatus: pending` and the reaper frees it if the
 * host comes back.
 */
export const LEASE_STATUSES = ['active', 'released', 'expired', 'failed', 'retained', 'lost'] as const;
export type LeaseStatus = (typeof LEASE_STATUSES)[number];

export const LEASE_POLICIES = [
  'ephemeral',
  'reuse_by_environment',
  'reuse_by_execution_workspace',
  'retain_on_failure',
] as const;
export type LeasePolicy = (typeof LEASE_POLICIES)[number];
export const DEFAULT_LEASE_POLICY: LeasePolicy = 'ephemeral';

/**
 * What the control plane asks to become of the provider resource when it completes or cancels a run
 * (omitted: the lease policy decides). `destroy` frees it even when the policy would keep it;
 * `stop_and_retain` and `keep_running` keep it past the lease (this run's commands end either way).
 */
export const PROVIDER_RESOURCE_DISPOSITIONS = ['keep_running', 'stop_and_retain', 'destroy'] as const;
export type ProviderResourceDisposition = (typeof PROVIDER_RESOURCE_DISPOSITIONS)[number];

/** How long a ready run holds its lease without a renewal. */
export const DEFAULT_LEASE_TTL_MS = 3600_000;

/** How long a step on a host-bound resource waits to be picked up before the run checks the host. */
export const DEFAULT_HOST_PICKUP_MS = 30_000;

/** How many times a run not yet ready is placed on another host after its host was lost. */
export const MAX_PLACEMENTS = 3;

/** History events after which a held run continues as new (Temporal warns at 10,240 and stops at 51,200). */
export const DEFAULT_CONTINUE_AFTER_EVENTS = 2000;

export const CLEANUP_STATUSES = ['pending', 'success', 'failed'] as const;
export type CleanupStatus = (typeof CLEANUP_STATUSES)[number];

export const RUN_PHASES = [
  'resolving',
  'leasing',
  'awaiting_realize',
  'realizing',
  'awaiting_retry',
  'waiting_for_capacity',
  'ready',
  'releasing',
  'released',
  'failed',
  'cancelled',
] as const;
export type RunPhase = (typeof RUN_PHASES)[number];

export const ACTIVITY_ACTIONS = {
  leaseAcquired: 'environment.lease_acquired',
  workspaceRealized: 'environment.workspace_realized',
  leaseReleased: 'environment.lease_released',
  leaseExpired: 'environment.lease_expired',
  /** The reaper freed the provider resource of an ended lease whose own cleanup had failed. */
  leaseCleanedUp: 'environment.lease_cleaned_up',
  /** The worker host that held the lease's resource is gone. */
  leaseLost: 'environment.lease_lost',
  /** A provider resource kept past its lease (reuse, retention) was destroyed. */
  leaseDestroyed: 'environment.lease_destroyed',
  /** A run took a warm sandbox from its environment's pool instead of acquiring a new one. */
  leaseTakenFromPool: 'environment.lease_taken_from_pool',
  /** A sandbox's egress proxy refused a connection (logged once per lease, phase, host, port and reason). */
  egressDenied: 'environment.egress_denied',
} as const;

/** Failure type of a run cancelled before it was ready (not an environment error code). */
export const RUN_CANCELLED = 'run_cancelled';

export const DEFAULT_TASK_QUEUE = 'envrun';

/**
 * The task queue of one worker host: work on a host-bound resource (a local folder, a bubblewrap or fake
 * sandbox) runs there, on the host that holds it. Every worker polls the shared queue and its own.
 */
export function hostTaskQueue(taskQueue: string, hostId: string): string {
  return `${taskQueue}/host/${hostId}`;
}
export const WORKFLOW_TYPE = 'environmentRun';

/**
 * One run = one workflow, addressed by company + heartbeat run, so starting the same run twice reaches
 * the same workflow. Both parts are validated to a safe alphabet before they get here.
 */
export function runWorkflowId(companyId: string, heartbeatRunId: string): string {
  return `envrun/${companyId}/${heartbeatRunId}`;
}

/** A command id: 1–128 letters, digits or `. _ : -`, starting alphanumeric (the caller's, or a UUID). */
export const COMMAND_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
export const COMMAND_ID_RULE = 'must be 1–128 letters, digits or . _ : - (starting alphanumeric)';
