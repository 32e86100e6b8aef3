// The run's side of capacity: which gates it must pass, waiting for their slots, and giving them back.
// Each gate is a capacityGate workflow that admits runs in arrival order.
import { CancellationScope, condition, getExternalWorkflowHandle, workflowInfo } from '@temporalio/workflow';
import { releaseSlotSignal } from '../contracts/messages.js';
import type { Gate } from '../contracts/lease-policy.js';
import { sharedSteps } from './activity-options.js';
import type { Run } from './run-state.js';

export { capacityGates, type Gate } from '../contracts/lease-policy.js';

/** Joins each gate's queue in turn and waits until that gate admits the run. */
export async function waitForSlots(run: Run, gates: Gate[]): Promise<void> {
  const info = workflowInfo();
  for (const gate of gates) {
    run.setPhase('waiting_for_capacity');
    run.joinedGates.push(gate.id);
    await sharedSteps.requestSlot({
      gateId: gate.id,
      capacity: gate.capacity,
      runWorkflowId: info.workflowId,
      taskQueue: info.taskQueue,
    });
    await condition(() => run.granted.has(gate.id));
  }
}

/** Gives back the slots (or leaves the queues) of every gate joined, newest first, even when cancelled. */
export async function giveBackSlots(run: Run): Promise<void> {
  if (!run.joinedGates.length) return;
  const runWorkflowId = workflowInfo().workflowId;
  await CancellationScope.nonCancellable(async () => {
    for (const gateId of [...run.joinedGates].reverse()) {
      // A gate that is gone holds no slot.
      await getExternalWorkflowHandle(gateId)
        .signal(releaseSlotSignal, runWorkflowId)
        .catch(() => undefined);
    }
  });
}
