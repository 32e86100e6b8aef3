// The orphan sweep, started by a Temporal Schedule every few minutes (or by `envrun reaper run-once`).
import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { ReapedLease } from '../leases/release.js';

const { sweepOrphanLeases } = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  retry: { maximumAttempts: 3, initialInterval: '5s' },
  summary: 'release leases whose run is gone',
});

export async function reaper(): Promise<ReapedLease[]> {
  return sweepOrphanLeases();
}
