import { WorkflowNotFoundError } from '@temporalio/client';
import type { ActivityDeps } from './deps.js';

/**
 * Which of a gate's holders have ended (or never existed): their slots are taken back, so a run that was
 * terminated, or whose release never reached the gate, cannot hold a slot forever.
 */
export function createEndedHolders(deps: ActivityDeps) {
  return async function endedHolders(runWorkflowIds: string[]): Promise<string[]> {
    if (!deps.temporal) throw new Error('capacity gates need a Temporal client in the activity dependencies');
    const ended: string[] = [];
    for (const id of runWorkflowIds) {
      try {
        const { status } = await deps.temporal.workflow.getHandle(id).describe();
        if (status.name !== 'RUNNING') ended.push(id);
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) ended.push(id);
        else throw err;
      }
    }
    return ended;
  };
}
