import { z } from 'zod';
import {
  AbsolutePath,
  CleanupStatusSchema,
  DisplayName,
  DriverSchema,
  EnvironmentStatusSchema,
  ExternalId,
  JsonObject,
  LeasePolicySchema,
  LeaseStatusSchema,
  Timestamp,
  Uuid,
} from './common.js';

export const EnvironmentSchema = z.object({
  id: z.string(),
  companyId: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  driver: DriverSchema,
  status: EnvironmentStatusSchema,
  config: JsonObject,
  metadata: JsonObject.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Environment = z.infer<typeof EnvironmentSchema>;

export const EnvironmentLeaseSchema = z.object({
  id: z.string(),
  companyId: z.string(),
  environmentId: z.string(),
  executionWorkspaceId: z.string().nullable(),
  issueId: z.string().nullable(),
  heartbeatRunId: z.string().nullable(),
  status: LeaseStatusSchema,
  leasePolicy: LeasePolicySchema,
  provider: z.string().nullable(),
  providerLeaseId: z.string().nullable(),
  acquiredAt: Timestamp,
  lastUsedAt: Timestamp,
  expiresAt: Timestamp.nullable(),
  releasedAt: Timestamp.nullable(),
  failureReason: z.string().nullable(),
  cleanupStatus: CleanupStatusSchema.nullable(),
  metadata: JsonObject.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type EnvironmentLease = z.infer<typeof EnvironmentLeaseSchema>;

/** Runtime config of an execution workspace, kept in `metadata.config` (docs/design.md). */
export const ExecutionWorkspaceRuntimeConfig = z
  .object({
    provisionCommand: z.string().max(10_000).nullish(),
    teardownCommand: z.string().max(10_000).nullish(),
    cleanupCommand: z.string().max(10_000).nullish(),
    environmentId: z.string().nullish(),
  })
  .passthrough();

/**
 * What a control plane sends to persist an execution workspace (`createExecutionWorkspace`). Stricter than
 * the stored runtime config above: an unknown key (a misspelt `provisionComand`) is refused rather than
 * silently ignored, and `environmentId` must be an environment id.
 */
export const NewExecutionWorkspaceSchema = z
  .object({
    companyId: ExternalId,
    name: DisplayName,
    cwd: AbsolutePath,
    config: z
      .object({
        provisionCommand: z.string().max(10_000).nullish(),
        teardownCommand: z.string().max(10_000).nullish(),
        cleanupCommand: z.string().max(10_000).nullish(),
        environmentId: Uuid.nullish(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type NewExecutionWorkspaceInput = z.input<typeof NewExecutionWorkspaceSchema>;

export const ExecutionWorkspaceSchema = z.object({
  id: z.string(),
  companyId: z.string(),
  projectId: z.string().nullable(),
  projectWorkspaceId: z.string().nullable(),
  sourceIssueId: z.string().nullable(),
  mode: z.string(),
  strategyType: z.string(),
  name: z.string(),
  status: z.string(),
  cwd: z.string().nullable(),
  repoUrl: z.string().nullable(),
  baseRef: z.string().nullable(),
  branchName: z.string().nullable(),
  providerType: z.string(),
  providerRef: z.string().nullable(),
  derivedFromExecutionWorkspaceId: z.string().nullable(),
  lastUsedAt: Timestamp,
  openedAt: Timestamp,
  closedAt: Timestamp.nullable(),
  cleanupEligibleAt: Timestamp.nullable(),
  cleanupReason: z.string().nullable(),
  config: JsonObject.nullable(),
  metadata: JsonObject.nullable(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type ExecutionWorkspace = z.infer<typeof ExecutionWorkspaceSchema>;

export const ActivityLogEntrySchema = z.object({
  id: z.string(),
  companyId: z.string(),
  actorType: z.string(),
  actorId: z.string(),
  action: z.string(),
  entityType: z.string(),
  entityId: z.string(),
  agentId: z.string().nullable(),
  runId: z.string().nullable(),
  details: JsonObject.nullable(),
  createdAt: Timestamp,
});
export type ActivityLogEntry = z.infer<typeof ActivityLogEntrySchema>;

export const WorkspaceStrategySchema = z.enum(['project_primary', 'git_worktree']);

/** A git branch name we are willing to pass to git as an argument (further checked by git itself). */
export const BranchName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, 'must be a plain git branch name (letters, digits, . _ / -)')
  .refine((b) => !b.includes('..') && !b.endsWith('.lock') && !b.endsWith('/'), 'is not a valid git branch name');

/** Where the code is for this run, on the worker's side (docs/design.md). */
export const RealizedExecutionWorkspaceSchema = z.object({
  baseCwd: AbsolutePath,
  source: z.string().default('project_primary'),
  projectId: z.string().nullable().default(null),
  workspaceId: z.string().nullable().default(null),
  repoUrl: z.string().max(2000).nullable().default(null),
  repoRef: z
    .string()
    .min(1)
    .max(200)
    // Reaches git as an argument of its own; a leading "-" would still be read as an option.
    .refine((r) => !r.startsWith('-'), 'must not start with "-" (git would read it as an option)')
    .refine((r) => !/[\s\x00-\x1f\x7f]/.test(r), 'must not contain whitespace or control characters')
    .nullable()
    .default(null),
  strategy: WorkspaceStrategySchema.default('project_primary'),
  cwd: AbsolutePath,
  branchName: BranchName.nullable().default(null),
  worktreePath: AbsolutePath.nullable().default(null),
  warnings: z.array(z.string()).default([]),
  created: z.boolean().default(false),
});
export type RealizedExecutionWorkspace = z.infer<typeof RealizedExecutionWorkspaceSchema>;

export const RuntimeOverlaySchema = z.object({
  provisionCommand: z.string().max(10_000).nullable().default(null),
  teardownCommand: z.string().max(10_000).nullable().default(null),
  cleanupCommand: z.string().max(10_000).nullable().default(null),
});

/** Version 1 of the workspace realization request (docs/design.md). */
export const WorkspaceRealizationRequestSchema = z.object({
  version: z.literal(1),
  adapterType: z.string(),
  companyId: z.string(),
  environmentId: z.string(),
  executionWorkspaceId: z.string().nullable(),
  issueId: z.string().nullable(),
  heartbeatRunId: z.string(),
  requestedMode: z.string().nullable(),
  source: z.object({
    kind: z.string(),
    localPath: z.string(),
    projectId: z.string().nullable(),
    projectWorkspaceId: z.string().nullable(),
    repoUrl: z.string().nullable(),
    repoRef: z.string().nullable(),
    strategy: WorkspaceStrategySchema,
    branchName: z.string().nullable(),
    worktreePath: z.string().nullable(),
  }),
  runtimeOverlay: RuntimeOverlaySchema,
});
export type WorkspaceRealizationRequest = z.infer<typeof WorkspaceRealizationRequestSchema>;

export const SYNC_STRATEGIES = [
  'none',
  'ssh_git_import_export',
  'ssh_archive_upload_download',
  'sandbox_archive_upload_download',
  'provider_defined',
] as const;

/** Version 1 of the workspace realization record (docs/design.md). */
export const WorkspaceRealizationRecordSchema = z.object({
  version: z.literal(1),
  /** The environment's driver; `transport` is how the workspace is reached (the same for every driver today). */
  driver: DriverSchema,
  transport: DriverSchema,
  provider: z.string().nullable(),
  environmentId: z.string(),
  leaseId: z.string(),
  providerLeaseId: z.string().nullable(),
  local: z.object({ path: z.string(), strategy: WorkspaceStrategySchema, branchName: z.string().nullable() }),
  remote: z.object({
    path: z.string(),
    host: z.string().optional(),
    port: z.number().optional(),
    username: z.string().optional(),
    sandboxId: z.string().optional(),
  }),
  sync: z.object({ strategy: z.enum(SYNC_STRATEGIES) }),
  bootstrap: z.object({
    command: z.string().nullable(),
    exitCode: z.number().nullable(),
    durationMs: z.number().nullable(),
    /** The command ran when the warm pool provisioned this sandbox, for the same fingerprint: not again. */
    provisionedByPool: z.boolean().optional(),
  }),
  rebuild: JsonObject,
  summary: z.string(),
});
export type WorkspaceRealizationRecord = z.infer<typeof WorkspaceRealizationRecordSchema>;
/** A record as a driver makes it: the realize step adds the environment's driver. */
export type DriverRealization = Omit<WorkspaceRealizationRecord, 'driver'>;
