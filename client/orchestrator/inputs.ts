// The orchestrator's inputs: Paperclip's call shapes (2026.916.1) with envrun's own fields, as zod schemas.
// Fields Paperclip sends that envrun has no use for are checked, not used.
import { z } from 'zod';
import {
  ExecutionWorkspaceRuntimeConfig,
  ExternalId,
  LeasePolicySchema,
  RealizedExecutionWorkspaceSchema,
  ReleaseRequestSchema,
  Uuid,
  type Driver,
} from '../../contracts/index.js';
import { shellQuote } from '../../drivers/ssh/connection.js';

/** The modes of a persisted execution workspace (Paperclip's ExecutionWorkspace `mode`). */
const EXECUTION_WORKSPACE_MODES = [
  'adapter_managed',
  'cloud_sandbox',
  'isolated_workspace',
  'operator_branch',
  'shared_workspace',
] as const;
export type ExecutionWorkspaceMode = (typeof EXECUTION_WORKSPACE_MODES)[number];

/** An id the control plane chose for a record of its own (its local environment, its execution workspace). */
const ControlPlaneId = z.string().min(1).max(200);
const Command = z.string().max(10_000).nullish();

/** The persisted execution workspace as acquire gets it: its id and mode (other fields are not read). */
const WorkspaceRefSchema = z.object({ id: ControlPlaneId, mode: z.enum(EXECUTION_WORKSPACE_MODES) });

/** The issue's execution workspace settings: checked, not used (the environment's config decides). */
const WorkspaceSettingsSchema = z.object({
  mode: z.string().max(64).nullish(),
  sharedWorkspaceConcurrency: z.string().max(64).nullish(),
  environmentId: z.string().max(200).nullish(),
  workspaceStrategy: z.custom<object>((v) => typeof v === 'object' && v !== null, 'must be an object').nullish(),
  workspaceRuntime: z.record(z.string(), z.unknown()).nullish(),
  networkEgress: z
    .object({
      allowFqdns: z.array(z.string().max(253)).max(1000).optional(),
      allowCidrs: z.array(z.string().max(64)).max(1000).optional(),
    })
    .nullish(),
});

/** What acquire reads of an environment the caller hands back (the rest is envrun's own row). */
const EnvironmentRefSchema = z.object({ id: Uuid });

const acquireFields = {
  companyId: ExternalId,
  heartbeatRunId: ExternalId,
  issueId: ExternalId.nullish(),
  agentId: ExternalId.nullish(),
  /** Checked where the run starts (`request.adapterType`). */
  adapterType: z.string().max(64).nullish(),
  persistedExecutionWorkspace: WorkspaceRefSchema.nullish(),
  executionWorkspaceSettings: WorkspaceSettingsSchema.nullish(),
  /** envrun's: an execution workspace of envrun's store (admin.createExecutionWorkspace). */
  executionWorkspaceId: Uuid.nullish(),
  /** envrun's: the run's lease policy, else the environment's. */
  leasePolicy: LeasePolicySchema.nullish(),
};

export const AcquireForRunSchema = z
  .object({
    ...acquireFields,
    /** Paperclip's: the selected environment; `localEnvironmentId` (or none) means the company's local one. */
    selectedEnvironmentId: z.string().max(200).optional(),
    localEnvironmentId: ControlPlaneId.optional(),
    /** envrun's: an environment id; none means the company's local environment. */
    environmentId: Uuid.nullish(),
  })
  .strict()
  .refine((r) => !(r.environmentId && r.selectedEnvironmentId), {
    message: 'give environmentId or selectedEnvironmentId, not both',
    path: ['selectedEnvironmentId'],
  });
export type AcquireForRunInput = z.input<typeof AcquireForRunSchema>;

export const AcquireLeaseSchema = z.object({ ...acquireFields, environment: EnvironmentRefSchema }).strict();
export type AcquireLeaseInput = z.input<typeof AcquireLeaseSchema>;

export const ResolveEnvironmentSchema = z
  .object({ companyId: ExternalId, selectedEnvironmentId: z.string().max(200), localEnvironmentId: ControlPlaneId })
  .strict();
export type ResolveEnvironmentInput = z.input<typeof ResolveEnvironmentSchema>;

export const ResolveTransportSchema = z
  .object({
    companyId: ExternalId,
    adapterType: z.string().max(64),
    environment: z.object({
      id: z.string().max(200),
      driver: z.string().max(64),
      config: z.record(z.string(), z.unknown()),
    }),
    leaseMetadata: z.record(z.string(), z.unknown()).nullable(),
  })
  .strict();
export type ResolveTransportInput = z.input<typeof ResolveTransportSchema>;

/** The persisted execution workspace as realize gets it: its runtime commands are in `config` or `metadata.config`. */
const PersistedWorkspaceSchema = z.object({
  id: ControlPlaneId,
  mode: z.string().max(64).nullish(),
  config: z.object({ provisionCommand: Command, teardownCommand: Command, cleanupCommand: Command }).nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
});

export const RealizeForRunSchema = z
  .object({
    environment: z.object({ id: ControlPlaneId }),
    lease: z.object({ id: ControlPlaneId }),
    adapterType: z.string().max(64),
    companyId: ExternalId,
    issueId: ExternalId.nullish(),
    heartbeatRunId: ExternalId,
    /** The realized execution workspace: where the code is on the control plane's side. */
    executionWorkspace: RealizedExecutionWorkspaceSchema,
    effectiveExecutionWorkspaceMode: z.string().max(64).nullish(),
    persistedExecutionWorkspace: PersistedWorkspaceSchema.nullish(),
    /** Paperclip's in-process observer of its sandbox bridge: accepted, not used (envrun has no such bridge). */
    duplexObservabilityRecorder: z.unknown().optional(),
  })
  .strict();

/** A persisted execution workspace, as the control plane stores it; realize hands it back with its realization. */
export interface PersistedExecutionWorkspaceInput {
  id: string;
  mode?: string | null;
  /** Paperclip's: `{provisionCommand, teardownCommand, cleanupCommand, …}`. */
  config?: unknown;
  /** envrun's runtime commands are in `metadata.config` (admin.createExecutionWorkspace). */
  metadata?: Record<string, unknown> | null;
}

export type RealizeForRunInput<W extends PersistedExecutionWorkspaceInput = PersistedExecutionWorkspaceInput> = Omit<
  z.input<typeof RealizeForRunSchema>,
  'persistedExecutionWorkspace'
> & { persistedExecutionWorkspace?: W | null };

export const ReleaseForRunSchema = z
  .object({
    companyId: ExternalId,
    heartbeatRunId: ExternalId,
    agentId: ExternalId.nullish(),
    /** `released` (or envrun's `succeeded`, or none): the run succeeded; any other status fails it. */
    status: z.string().min(1).max(64).optional(),
    failureReason: z.string().max(2000).nullish(),
    ...ReleaseRequestSchema.shape,
    /** Paperclip's runner lifecycle report: checked, not used. */
    nativeLifecycleTelemetry: z
      .object({
        provider: z.string().max(200),
        harness: z.string().max(200),
        lifecycleMode: z.enum(['per_turn', 'warm']),
        sandboxResource: z.enum(['keep_running', 'stop_and_reuse', 'destroy_after_turn']),
      })
      .optional(),
  })
  .strict();
export type ReleaseForRunInput = z.input<typeof ReleaseForRunSchema>;

export interface RuntimeCommands {
  provisionCommand: string | null;
  teardownCommand: string | null;
  cleanupCommand: string | null;
}

/**
 * The runtime commands the realization runs: Paperclip's in the persisted workspace's `config`, envrun's in its
 * `metadata.config`. With `provision: 'paperclip'` the provision command runs as Paperclip's orchestrator runs
 * it: on ssh environments only, in a login shell.
 */
export function runtimeOverlay(
  persisted: z.output<typeof PersistedWorkspaceSchema> | null,
  provision: 'environment' | 'paperclip' | undefined,
  driver: Driver | null,
): RuntimeCommands {
  const parsedStored = ExecutionWorkspaceRuntimeConfig.safeParse(persisted?.metadata?.config ?? {});
  const stored = parsedStored.success ? parsedStored.data : {};
  const own = persisted?.config ?? {};
  const commands = {
    provisionCommand: own.provisionCommand ?? stored.provisionCommand ?? null,
    teardownCommand: own.teardownCommand ?? stored.teardownCommand ?? null,
    cleanupCommand: own.cleanupCommand ?? stored.cleanupCommand ?? null,
  };
  if (provision === 'paperclip') {
    // '' runs nothing, where null would fall back to envrun's stored workspace config.
    const command = commands.provisionCommand;
    commands.provisionCommand = driver === 'ssh' && command?.trim() ? loginShell(command) : '';
  }
  return commands;
}

/** `bash -lc COMMAND` with SHELL=/bin/bash, as one `/bin/sh -c` command line (Paperclip's provision shell). */
function loginShell(command: string): string {
  return `exec env SHELL=/bin/bash bash -lc ${shellQuote(command)}`;
}
