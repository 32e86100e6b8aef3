// The bare baseline of `npm run bench`: a plain workflow with as many sequential no-op activities as an
// envrun run has steps, and the same ready/complete shape (update waitReady, update complete).
import { allHandlersFinished, condition, defineUpdate, proxyActivities, setHandler } from '@temporalio/workflow';

export const bareReady = defineUpdate<string>('waitReady');
export const bareComplete = defineUpdate<string>('complete');

const { noop } = proxyActivities<{ noop(step: string): Promise<string> }>({ startToCloseTimeout: '30s' });
const BEFORE_READY = [
  'resolveEnvironment',
  'acquireLease',
  'logActivity',
  'realizeWorkspace',
  'persistMetadata',
  'resolveTarget',
  'logActivity',
];
const AFTER_COMPLETE = ['releaseLease', 'logActivity'];

export async function benchBare(): Promise<string> {
  let ready = false;
  let done = false;
  let released = false;
  setHandler(bareReady, async () => {
    await condition(() => ready);
    return 'ready';
  });
  setHandler(bareComplete, async () => {
    done = true;
    await condition(() => released);
    return 'released';
  });
  for (const step of BEFORE_READY) await noop(step);
  ready = true;
  await condition(() => done);
  for (const step of AFTER_COMPLETE) await noop(step);
  released = true;
  await condition(allHandlersFinished);
  return 'done';
}
