// Where the orchestrator reads environments (envrun's store, or the caller's reader), and the records of a
// run's released leases, each with its environment.
import type { Environment, RunState } from '../../contracts/index.js';
import type { Store } from '../../store/store.js';
import type { ClientConfig } from '../config.js';
import { EnvironmentRunError, stepError } from './errors.js';
import {
  toControlPlaneEnvironment,
  toControlPlaneLease,
  type LeaseRecord,
  type ReleaseForRunResult,
} from './shapes.js';

/** Where environments are read: envrun's store (`admin.store`, or any with these two calls). */
export interface EnvironmentReader {
  getEnvironment(companyId: string, id: string): Promise<Environment | null>;
  ensureLocalEnvironment(companyId: string): Promise<Environment>;
}

/** envrun's database as the admin opens it (DATABASE_URL, or the embedded store of ENVRUN_DATA_DIR). */
export async function openEnvironments(config: ClientConfig): Promise<{ reader: Store; close(): Promise<void> }> {
  // Loaded here: a caller that never reads environments loads no database package.
  const [{ openDatabase, resolveDatabaseUrl }, { Store }] = await Promise.all([
    import('../../store/db.js'),
    import('../../store/store.js'),
  ]);
  const url = await resolveDatabaseUrl({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const database = await openDatabase(url, 2);
  return { reader: new Store(database.db), close: () => database.close() };
}

/** The run's released leases with their environments, each read once; a failed read goes to `errors`. */
export async function releasedRecords(
  state: RunState,
  errors: ReleaseForRunResult['errors'],
  environments: () => Promise<EnvironmentReader>,
): Promise<ReleaseForRunResult['released']> {
  const seen = new Map<string, Promise<Environment | null>>();
  const records: LeaseRecord[] = [];
  for (const lease of state.releasedLeases) {
    let environment: Environment | null;
    try {
      const reader = await environments();
      if (!seen.has(lease.environmentId)) {
        seen.set(lease.environmentId, reader.getEnvironment(state.companyId, lease.environmentId));
      }
      environment = await seen.get(lease.environmentId)!;
    } catch (err) {
      errors.push({ leaseId: lease.id, error: stepError(err, 'lease_release_failed', state) as EnvironmentRunError });
      continue;
    }
    if (!environment) {
      const error = new EnvironmentRunError(
        'lease_release_failed',
        `lease ${lease.id} was released, but its environment ${lease.environmentId} is gone`,
        { environmentId: lease.environmentId },
      );
      errors.push({ leaseId: lease.id, error });
      continue;
    }
    records.push({
      environment: toControlPlaneEnvironment(environment),
      lease: toControlPlaneLease(lease),
      leaseContext: {
        workflowId: state.workflowId,
        companyId: state.companyId,
        heartbeatRunId: state.heartbeatRunId,
        environmentId: lease.environmentId,
        leaseId: lease.id,
        executionWorkspaceId: lease.executionWorkspaceId,
        executionWorkspaceMode: null,
        issueId: lease.issueId,
      },
    });
  }
  return records;
}
