import { z } from 'zod';
import { DriverSchema, ExternalId, LeasePolicySchema, RunFailureSchema, Timestamp } from './common.js';
import {
  DEFAULT_CONTINUE_AFTER_EVENTS,
  DEFAULT_HOST_PICKUP_MS,
  DEFAULT_LEASE_TTL_MS,
  PROVIDER_RESOURCE_DISPOSITIONS,
  RUN_PHASES,
} from './constants.js';
import {
  EnvironmentLeaseSchema,
  ExecutionWorkspaceSchema,
  RealizedExecutionWorkspaceSchema,
  type RealizedExecutionWorkspace,
  RuntimeOverlaySchema,
  WorkspaceRealizationRecordSchema,
} from './records.js';
import { ExecutionTargetSchema, RemoteExecutionSpecSchema } from './target.js';

const AdapterType = z
  .string()
  .regex(/^[a-z0-9_.-]+$/, 'must be lower-case letters, digits, _ . -')
  .max(64);
const RequestedMode = z
  .string()
  .max(64)
  .nullish()
  .transform((v) => v ?? null);

/** What the control plane sends to start a run. Parsed once, in the client, before anything starts. */
export const RunRequestSchema = z
  .object({
    companyId: ExternalId,
    heartbeatRunId: ExternalId,
    environmentId: z
      .uuid()
      .nullish()
      .transform((v) => v ?? null),
    executionWorkspaceId: z
      .uuid()
      .nullish()
      .transform((v) => v ?? null),
    issueId: ExternalId.nullish().transform((v) => v ?? null),
    agentId: ExternalId.nullish().transform((v) => v ?? null),
    /**
     * The control plane's own execution workspace id, when envrun keeps no row for it (`executionWorkspaceId`
     * is envrun's): handed to providers as the run's `executionWorkspaceId`.
     */
    externalExecutionWorkspaceId: ExternalId.nullish().transform((v) => v ?? null),
    adapterType: AdapterType.default('process'),
    requestedMode: RequestedMode,
    leasePolicy: LeasePolicySchema.nullish().transform((v) => v ?? null),
    /**
     * `at_start`: the workspace comes with the request and the run goes on to ready. `on_request`: the run
     * stops once leased and realizes when asked (the realize update brings the workspace).
     */
    realize: z.enum(['at_start', 'on_request']).default('at_start'),
    /** Where the code is; absent only when the run realizes on request. */
    workspace: RealizedExecutionWorkspaceSchema.nullish().transform((v) => v ?? null),
    runtimeOverlay: RuntimeOverlaySchema.partial().default({}),
    provisionTimeoutMs: z
      .number()
      .int()
      .positive()
      .max(24 * 3600_000)
      .nullish()
      .transform((v) => v ?? null),
    /**
     * How long a run whose realization failed (retries spent) waits in `awaiting_retry` for an operator's
     * retry before it ends with workspace_realization_failed. 0: it ends at once.
     */
    awaitRetryMs: z
      .number()
      .int()
      .min(0)
      .max(7 * 24 * 3600_000)
      .default(30 * 60_000),
    /** A ready run that is neither renewed nor completed within this time releases its lease as `expired`. */
    leaseTtlMs: z
      .number()
      .int()
      .min(1000)
      .max(30 * 24 * 3600_000)
      .default(DEFAULT_LEASE_TTL_MS),
    /**
     * A held run continues as new once its history has this many events (renewals add to it), so a run can
     * be held for weeks without reaching Temporal's history limit.
     */
    continueAfterEvents: z.number().int().min(100).max(40_000).default(DEFAULT_CONTINUE_AFTER_EVENTS),
    /**
     * How long a step on a host-bound resource may wait for that host's worker to pick it up before the run
     * checks that the host is still there (a busy host: it waits again; a gone host: environment_host_lost,
     * and a run not yet ready is placed again on a live host).
     */
    hostPickupMs: z.number().int().min(500).max(3600_000).default(DEFAULT_HOST_PICKUP_MS),
  })
  .strict()
  .refine((r) => r.realize === 'on_request' || r.workspace !== null, {
    message: 'required (only a run that realizes on request may leave it out)',
    path: ['workspace'],
  });
export type RunRequestInput = z.input<typeof RunRequestSchema>;
export type RunRequest = z.output<typeof RunRequestSchema>;
/** A run request at realization, when its workspace is known. */
export type RealizableRequest = RunRequest & { workspace: RealizedExecutionWorkspace };

/** What a run that realizes on request is asked to realize (the realize update's argument). */
export const RealizeRequestSchema = z
  .object({
    workspace: RealizedExecutionWorkspaceSchema,
    adapterType: AdapterType.optional(),
    requestedMode: RequestedMode,
    runtimeOverlay: RuntimeOverlaySchema.partial().optional(),
  })
  .strict();
export type RealizeRequestInput = z.input<typeof RealizeRequestSchema>;
export type RealizeRequest = z.output<typeof RealizeRequestSchema>;

/** What a ready run hands to the control plane. */
export const RunResultSchema = z.object({
  lease: EnvironmentLeaseSchema,
  executionTarget: ExecutionTargetSchema,
  remoteExecution: RemoteExecutionSpecSchema,
  /** `{}` for the plugin driver, which realizes nothing. */
  workspaceRealization: z.union([WorkspaceRealizationRecordSchema, z.object({}).strict()]),
  persistedExecutionWorkspace: ExecutionWorkspaceSchema.nullable(),
});
export type RunResult = z.infer<typeof RunResultSchema>;

/**
 * How the release of a completed or cancelled run treats its provider resource (omitted: as the lease
 * policy says). `cancelActiveWork`: the provider stops commands still running instead of waiting for them.
 */
export const ReleaseRequestSchema = z
  .object({
    cancelActiveWork: z.boolean().optional(),
    providerResourceDisposition: z.enum(PROVIDER_RESOURCE_DISPOSITIONS).optional(),
  })
  .strict();
export type ReleaseRequestInput = z.input<typeof ReleaseRequestSchema>;
export type ReleaseRequest = z.output<typeof ReleaseRequestSchema>;

export const CompleteRunSchema = z
  .object({
    status: z.enum(['succeeded', 'failed']),
    failureReason: z
      .string()
      .max(2000)
      .nullish()
      .transform((v) => v ?? null),
    ...ReleaseRequestSchema.shape,
  })
  .strict()
  .refine((c) => c.status === 'failed' || c.failureReason === null, {
    message: 'only a failed run has a failure reason',
    path: ['failureReason'],
  });
export type CompleteRun = z.output<typeof CompleteRunSchema>;

export const RunPhaseSchema = z.enum(RUN_PHASES);

export const RunTimestampsSchema = z.object({
  requested: Timestamp,
  leased: Timestamp.nullable(),
  realized: Timestamp.nullable(),
  ready: Timestamp.nullable(),
  released: Timestamp.nullable(),
});

/** What `getRun` answers: the workflow's own view of the run. */
export const RunStateSchema = z.object({
  workflowId: z.string(),
  companyId: z.string(),
  heartbeatRunId: z.string(),
  phase: RunPhaseSchema,
  environmentId: z.string().nullable(),
  driver: DriverSchema.nullable(),
  provider: z.string().nullable(),
  leaseId: z.string().nullable(),
  result: RunResultSchema.nullable(),
  error: RunFailureSchema.nullable(),
  completion: z.object({ status: z.enum(['succeeded', 'failed']), failureReason: z.string().nullable() }).nullable(),
  releasedLeases: z.array(EnvironmentLeaseSchema),
  /** Leases lost with their worker host (ids), before the run was placed again or failed. */
  lostLeases: z.array(z.string()),
  timestamps: RunTimestampsSchema,
  /** Realization attempts started by operators (0 = only the first). */
  operatorRetries: z.number().int(),
  /** The last realization error while awaiting an operator's retry. */
  lastError: RunFailureSchema.nullable(),
  /** When the held lease expires unless renewed. */
  expiresAt: Timestamp.nullable(),
});
export type RunState = z.infer<typeof RunStateSchema>;

/**
 * What the run's workflow returns when it ends without error (the released rows are in its final state,
 * getRun). How Temporal closed the workflow is the client's RunOutcome.
 */
export const RunWorkflowResultSchema = z.object({
  status: z.enum(['succeeded', 'failed', 'expired']),
  releasedLeaseIds: z.array(z.string()),
});
export type RunWorkflowResult = z.infer<typeof RunWorkflowResultSchema>;
