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
