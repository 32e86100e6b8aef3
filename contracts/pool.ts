// Warm pools: an environment may keep sandboxes acquired, realized from a base and provisioned, so a run
// that asks for that base takes one instead of waiting for its provision command. Pure: the workflows
// import this file as well as the activities, the drivers and the client.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { z } from 'zod';
import { AbsolutePath } from './common.js';
import { durationMs } from './duration.js';

/** A lockfile (or any file) of the base, relative to its folder, whose content the fingerprint covers. */
const FingerprintFile = z
  .string()
  .min(1)
  .max(500)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..') && !p.includes('\0'), {
    message: 'must be a path relative to base.cwd, without ".."',
  });

/** A duration such as '30m' or a number of milliseconds. */
const Duration = z.union([
  z
    .number()
    .int()
    .min(1000)
    .max(30 * 24 * 3600_000),
  z
    .string()
    .refine((t) => (durationMs(t) ?? 0) >= 1000, 'must be a duration of at least 1s, like 30m')
    .transform((t) => durationMs(t)!),
]);

export const WarmPoolBaseSchema = z
  .object({
    /** The host folder pooled sandboxes are realized from (inside the company's workspace roots). */
    cwd: AbsolutePath,
    /** Runs of this execution workspace take from the pool (else runs whose repository and ref, or folder, match). */
    executionWorkspaceId: z.uuid().optional(),
    repoUrl: z.string().min(1).max(2000).optional(),
    repoRef: z.string().min(1).max(200).optional(),
    /** Run in each pooled sandbox once it is realized; a run with another provision command does not match. */
    provisionCommand: z.string().min(1).max(10_000).nullable().default(null),
    /** Files whose content decides whether a pooled sandbox's provisioning still holds for a run (lockfiles). */
    fingerprintFiles: z.array(FingerprintFile).max(32).default([]),
  })
  .strict()
  .refine((b) => !b.repoRef || b.repoUrl, { message: 'repoRef needs repoUrl', path: ['repoRef'] });

export const WarmPoolSchema = z
  .object({
    /** How many ready sandboxes the pool keeps. */
    size: z.number().int().min(1).max(64),
    /** A pooled sandbox not taken within this long is retired and replaced (default 1h). */
    maxIdle: Duration.default(3600_000),
    base: WarmPoolBaseSchema,
  })
  .strict();
export type WarmPool = z.infer<typeof WarmPoolSchema>;
export type WarmPoolBase = z.infer<typeof WarmPoolBaseSchema>;

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
