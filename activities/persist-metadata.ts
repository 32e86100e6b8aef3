import type {
  Environment,
  EnvironmentLease,
  ExecutionWorkspace,
  WorkspaceRealizationRecord,
  WorkspaceRealizationRequest,
} from '../contracts/index.js';
import { failureContext, type ActivityDeps } from './deps.js';
import { asRunFailure } from './errors.js';

export interface PersistMetadataInput {
  environment: Environment;
  lease: EnvironmentLease;
  executionWorkspaceId: string | null;
  realizationRequest: WorkspaceRealizationRequest;
  record: WorkspaceRealizationRecord;
  /** The lease's expiry is pushed to now + TTL as the run becomes ready. */
  leaseTtlMs?: number;
}

export interface PersistMetadataOutput {
  lease: EnvironmentLease;
  persistedExecutionWorkspace: ExecutionWorkspace | null;
}

/** Step 4, in one transaction; the stored rows (not in-memory copies) are what the run returns. Idempotent. */
export function createPersistMetadata(deps: ActivityDeps) {
  return async function persistMetadata(input: PersistMetadataInput): Promise<PersistMetadataOutput> {
    try {
      const stored = await deps.store.persistRealization({
        leaseId: input.lease.id,
        companyId: input.lease.companyId,
        executionWorkspaceId: input.executionWorkspaceId,
        request: input.realizationRequest,
        record: input.record,
        expiresAt: input.leaseTtlMs ? new Date((deps.clock?.() ?? new Date()).getTime() + input.leaseTtlMs) : undefined,
      });
      return { lease: stored.lease, persistedExecutionWorkspace: stored.executionWorkspace };
    } catch (err) {
      throw asRunFailure(err, 'workspace_realization_failed', failureContext(deps, input.environment));
    }
  };
}
