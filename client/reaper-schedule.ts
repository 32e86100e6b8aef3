// The reaper's Temporal Schedule. The worker installs it at start and an operator from the CLI or
// EnvRunClient.installReaper; it lives with the client because client code never depends on the worker.
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { Duration } from '@temporalio/common';

export const REAPER_SCHEDULE_ID = 'envrun-reaper';

/**
 * Creates the reaper's Temporal Schedule (idempotent: an existing one is kept). Returns whether it created
 * it. `every` is a duration string (contracts/duration.ts), which Temporal reads as it is.
 */
export async function installReaperSchedule(client: Client, taskQueue: string, every: string): Promise<boolean> {
  try {
    await client.schedule.create({
      scheduleId: REAPER_SCHEDULE_ID,
      spec: { intervals: [{ every: every as Duration }] },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
      action: { type: 'startWorkflow', workflowType: 'reaper', taskQueue, args: [], workflowId: 'envrun-reaper' },
      memo: { description: 'releases active leases whose run workflow is closed or missing' },
    });
    return true;
  } catch (err) {
    if (err instanceof ScheduleAlreadyRunning) return false;
    throw err;
  }
}
