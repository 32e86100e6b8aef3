// The one place an activity-log row is built. Pure: the workflow, the release routine and the admin API
// all call it, so every row has the same shape and every event key the same format.
import { ACTIVITY_ACTIONS } from './constants.js';

export type ActivityAction = (typeof ACTIVITY_ACTIONS)[keyof typeof ACTIVITY_ACTIONS];

/** Who wrote a row: the run's workflow, the reaper, or an operator through the admin API or CLI. */
export const ACTORS = {
  run: { actorType: 'system', actorId: 'envrun' },
  reaper: { actorType: 'system', actorId: 'envrun-reaper' },
  operator: { actorType: 'operator', actorId: 'envrun-cli' },
} as const;
export type Actor = keyof typeof ACTORS;

export interface ActivityLogRow {
  /** Names the event: writing the same key twice leaves one row (a retried step, a replayed workflow). */
  eventKey: string;
  companyId: string;
  actorType: string;
  actorId: string;
  action: ActivityAction;
  entityType: 'environment_lease';
  entityId: string;
  agentId: string | null;
  runId: string | null;
  details: Record<string, unknown>;
}

export interface LeaseEvent {
  actor: Actor;
  /** What makes the event unique besides action and lease: the run's workflow id, or the actor's name. */
  scope: string;
  action: ActivityAction;
  lease: { id: string; companyId: string; heartbeatRunId: string | null };
  agentId?: string | null;
  details: Record<string, unknown>;
}

export function leaseEventRow(event: LeaseEvent): ActivityLogRow {
  return {
    eventKey: `${event.scope}:${event.action}:${event.lease.id}`,
    companyId: event.lease.companyId,
    ...ACTORS[event.actor],
    action: event.action,
    entityType: 'environment_lease',
    entityId: event.lease.id,
    agentId: event.agentId ?? null,
    runId: event.lease.heartbeatRunId,
    details: event.details,
  };
}
