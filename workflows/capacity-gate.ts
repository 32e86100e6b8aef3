// A capacity gate: admits runs in arrival order while fewer than `capacity` hold a slot. One gate
// workflow per environment (maxConcurrentLeases) or per execution workspace (single flight, wait mode):
// durable, visible in the UI, no in-memory counter anywhere.
import {
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import {
  getGateQuery,
  releaseSlotSignal,
  requestSlotSignal,
  slotGrantedSignal,
  type GateState,
} from '../contracts/messages.js';

export interface CapacityGateInput {
  capacity: number;
  holders?: string[];
  queue?: string[];
}

const { endedHolders } = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 3, initialInterval: '1s' },
  summary: 'find holders whose run has ended',
});

export async function capacityGate(input: CapacityGateInput): Promise<void> {
  const capacity = Math.max(1, input.capacity);
  const holders = new Set(input.holders ?? []);
  const queue = [...(input.queue ?? [])];
  // A new request wakes the gate even when it is full: its holders are checked for ended runs first.
  let requested = false;
  setHandler(requestSlotSignal, (runId: string) => {
    if (!holders.has(runId) && !queue.includes(runId)) queue.push(runId);
    requested = true;
  });
  setHandler(releaseSlotSignal, (runId: string) => {
    holders.delete(runId);
    const i = queue.indexOf(runId);
    if (i >= 0) queue.splice(i, 1);
  });
  setHandler(getGateQuery, (): GateState => ({ capacity, holders: [...holders], queue: [...queue] }));

  for (;;) {
    // Before a waiting run is turned away again, take back the slots of holders whose run has ended.
    if (queue.length > 0 && holders.size >= capacity) {
      for (const runId of await endedHolders([...holders])) holders.delete(runId);
    }
    requested = false;
    while (queue.length > 0 && holders.size < capacity) {
      const runId = queue.shift()!;
      holders.add(runId);
      try {
        await getExternalWorkflowHandle(runId).signal(slotGrantedSignal, workflowInfo().workflowId);
      } catch {
        holders.delete(runId); // the run is gone: its slot goes to the next
      }
    }
    if (workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof capacityGate>({ capacity, holders: [...holders], queue });
    }
    const idle = () => queue.length === 0 && holders.size === 0;
    // Idle for a while: end (the next request starts the gate again with signal-with-start).
    const admissible = () =>
      (queue.length > 0 && holders.size < capacity) || requested || workflowInfo().continueAsNewSuggested;
    // With runs waiting, look again every minute for holders that ended without giving their slot back.
    const woke = await condition(admissible, idle() || queue.length > 0 ? '1 minute' : '1 day');
    if (!woke && idle()) return;
  }
}
