// The orphan sweep, started by a Temporal Schedule every few minutes (or by `envrun reaper run-once`): it
// finds the leases whose run is gone (or whose cleanup failed) and releases each on the worker host that
// holds its resource. One lease's failure never stops the sweep; the next sweep tries it again. Then it
// deletes the command journals kept past ENVRUN_COMMAND_RETENTION after their lease's release.
import { log, patched, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { hostTaskQueue } from '../contracts/constants.js';
import type { ReapedLease } from '../contracts/reaper.js';

const { findOrphanLeases } = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 3, initialInterval: '5s' },
  summary: 'find leases whose run is gone',
});

const { deleteExpiredCommands } = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  retry: { maximumAttempts: 3, initialInterval: '5s' },
  summary: 'delete command journals past their retention',
});

function releaseOn(hostId: string | null) {
  return proxyActivities<Activities>({
    startToCloseTimeout: '10m',
    // A host that never picks it up is gone: its lease waits for the next sweep (or its host's return).
    ...(hostId ? { taskQueue: hostTaskQueue(workflowInfo().taskQueue, hostId), scheduleToStartTimeout: '1m' } : {}),
    retry: { maximumAttempts: 3, initialInterval: '5s' },
    summary: 'release a lease whose run is gone',
  }).leaseOperation;
}

export async function reaper(): Promise<ReapedLease[]> {
  const reaped: ReapedLease[] = [];
  for (const orphan of await findOrphanLeases()) {
    const { hostId, ...lease } = orphan;
    try {
      const done = (await releaseOn(hostId)({ kind: 'releaseOrphan', ...lease })) as ReapedLease | null;
      if (done) reaped.push(done);
    } catch {
      // Left for the next sweep.
    }
  }
  // Sweeps started before this step existed replay without it.
  if (patched('reaper-command-retention')) {
    try {
      const deleted = await deleteExpiredCommands();
      if (deleted > 0) log.info('deleted command journals past their retention', { deleted });
    } catch {
      // Left for the next sweep.
    }
  }
  return reaped;
}
