import type { ActivityDeps } from './deps.js';

export interface LogActivityInput {
  /** Names the event: the same key twice writes one entry (a retried step, a replayed workflow). */
  eventKey: string;
  companyId: string;
  action: string;
  entityType: 'environment_lease' | 'environment';
  entityId: string;
  agentId: string | null;
  runId: string | null;
  details: Record<string, unknown>;
}

export function createLogActivity(deps: ActivityDeps) {
  return async function logActivity(input: LogActivityInput): Promise<void> {
    await deps.store.logActivity({ ...input, actorType: 'system', actorId: 'envrun' });
  };
}
