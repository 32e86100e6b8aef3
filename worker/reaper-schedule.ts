import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';

export const REAPER_SCHEDULE_ID = 'envrun-reaper';

/** Creates the reaper's Temporal Schedule (idempotent: an existing one is kept). Returns whether it created it. */
export async function installReaperSchedule(client: Client, taskQueue: string, every: string): Promise<boolean> {
  try {
    await client.schedule.create({
      scheduleId: REAPER_SCHEDULE_ID,
      spec: { intervals: [{ every: every as `${number}m` }] },
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
