// Warm pools' names, messages and shapes, without zod: the workflows import this file (contracts/pool.ts has
// the config's schema, which they must not pull into the workflow bundle).
import { defineQuery, defineSignal } from '@temporalio/workflow';

/**
 * Pooled leases have this heartbeat run id prefix: a run's own id must start with a letter or digit, so no
 * run can ever be mistaken for (or adopt) a pooled lease.
 */
export const POOL_RUN_PREFIX = '_pool:';
export const isPooledRunId = (heartbeatRunId: string | null | undefined): boolean =>
  typeof heartbeatRunId === 'string' && heartbeatRunId.startsWith(POOL_RUN_PREFIX);

/** One pool workflow per environment. */
export function poolWorkflowId(companyId: string, environmentId: string): string {
  return `envrun-pool/${companyId}/${environmentId}`;
}
export const POOL_WORKFLOW_TYPE = 'warmPool';

/** The state of a pooled lease, in its metadata (`metadata.pool`). */
export type PooledState = 'filling' | 'ready' | 'retiring' | 'taken';
export interface PooledLeaseInfo {
  state: PooledState;
  /** The base's fingerprint when this sandbox was provisioned. */
  fingerprint?: string;
  readyAt?: string;
  takenAt?: string;
}

/** One ready (or filling) sandbox of the pool, as the pool workflow tracks it. */
export interface PoolMember {
  leaseId: string;
  poolRunId: string;
  state: PooledState;
  fingerprint: string | null;
  readyAt: string | null;
  hostId: string | null;
}

export interface PoolState {
  environmentId: string;
  size: number;
  fingerprint: string | null;
  members: PoolMember[];
  taken: number;
  filled: number;
  retired: number;
  /** Why the pool is not full, if it is not (capacity, a failing fill). */
  note: string | null;
}

/** The environment's pool config changed (or it was archived): the pool looks again. */
export const poolChangedSignal = defineSignal('poolChanged');
/** A run took a pooled sandbox (its lease id): the pool replaces it. */
export const poolTakenSignal = defineSignal<[string]>('poolTaken');
export const getPoolQuery = defineQuery<PoolState>('getPool');
