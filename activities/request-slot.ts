import { WorkflowNotFoundError } from '@temporalio/client';
import { requestSlotSignal } from '../contracts/messages.js';
import type { ActivityDeps } from './deps.js';

export interface RequestSlotInput {
  gateId: string;
  capacity: number;
  runWorkflowId: string;
  taskQueue: string;
}

/** Joins a capacity gate's queue, starting the gate if it is not running (signal-with-start). */
export function createRequestSlot(deps: ActivityDeps) {
  return async function requestSlot(input: RequestSlotInput): Promise<void> {
    if (!deps.temporal) throw new Error('capacity gates need a Temporal client in the activity dependencies');
    await deps.temporal.workflow.signalWithStart('capacityGate', {
      workflowId: input.gateId,
      taskQueue: input.taskQueue,
      args: [{ capacity: input.capacity }],
      signal: requestSlotSignal,
      signalArgs: [input.runWorkflowId],
    });
  };
}

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
