// The baselines of `npm run bench` (bundled ahead of time, run by bench/bench-bare-worker.ts). Each answers
// the same two updates as envrun's run workflow, by name: `waitReady` (sent with the start) and `complete`.
//   benchFloor   waitReady returns at once; complete ends the workflow: Temporal's own round trips.
//   benchShape   replays a plan read from a real envrun run's history (bench/bench-plan.ts): the same
//                workflow tasks, regular activities (on the same kind of queue), local activities, search
//                attribute and memo upserts, patch markers and hold timer, with payloads of the same sizes
//                and no-op activity bodies.
//   benchBare    the former baseline: 7 + 2 sequential no-op regular activities.
import {
  CancellationScope,
  allHandlersFinished,
  condition,
  defineUpdate,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  sleep,
  upsertMemo,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributeUpdatePair } from '@temporalio/common';
import type { ShapePlan, ShapeStep } from './bench-plan.js';

export const benchReady = defineUpdate<string>('waitReady');
export const benchComplete = defineUpdate<string>('complete');

/** The no-op activity of every baseline: takes `pad` (sized like envrun's input), returns `out` bytes. */
export interface NoopActivities {
  noop(pad: string, out?: number): Promise<string>;
}

const fill = (bytes: number) => 'x'.repeat(Math.max(0, bytes - 2)); // a JSON string's payload is its length + 2

export async function benchFloor(): Promise<string> {
  let done = false;
  setHandler(benchReady, () => 'ready');
  setHandler(benchComplete, () => {
    done = true;
    return 'released';
  });
  await condition(() => done);
  await condition(allHandlersFinished);
  return 'done';
}

export interface ShapeInput {
  plan: ShapePlan;
  /** The queue the plan's `host` activities go to (the bare worker's second queue, like envrun's host queue). */
  hostQueue: string;
  /** Pads the start input to envrun's input size. */
  pad: string;
}

export async function benchShape({ plan, hostQueue }: ShapeInput): Promise<string> {
  let ready = false;
  let done = false;
  let released = false;
  setHandler(benchReady, async () => {
    await condition(() => ready);
    return fill(plan.readyBytes);
  });
  setHandler(benchComplete, async () => {
    done = true;
    await condition(() => released);
    return fill(plan.completeBytes);
  });
  let patches = 0;
  const run = async (step: ShapeStep) => {
    const pad = fill(step.in ?? 0);
    const summary = step.s ? { summary: step.s } : {};
    switch (step.k) {
      case 'regular': {
        const { noop } = proxyActivities<NoopActivities>({
          startToCloseTimeout: '30s',
          ...(step.q === 'host' ? { taskQueue: hostQueue } : {}),
          ...summary,
        });
        await noop(pad, step.out ?? 0);
        return;
      }
      case 'local': {
        const { noop } = proxyLocalActivities<NoopActivities>({ startToCloseTimeout: '30s', ...summary });
        await noop('', step.out ?? 0);
        return;
      }
      case 'upsert':
        upsertSearchAttributes(
          (step.sa ?? []).map(
            ([name, type, value]) =>
              ({
                key: defineSearchAttributeKey(name, SearchAttributeType[type as keyof typeof SearchAttributeType]),
                value,
              }) as SearchAttributeUpdatePair,
          ),
        );
        return;
      case 'memo':
        upsertMemo(step.memo ?? {});
        return;
      case 'patch':
        patched(`bench-shape-${++patches}`);
        return;
      case 'sleep':
        await sleep(step.ms ?? 1);
        return;
    }
  };
  for (const step of plan.ready) await run(step);
  ready = true;
  if (plan.holdTimerMs && plan.holdTimerCancelled) await condition(() => done, plan.holdTimerMs);
  else {
    // A hold timer left pending at completion (no TimerCanceled event), as the run leaves it.
    if (plan.holdTimerMs) void new CancellationScope().run(() => sleep(plan.holdTimerMs!)).catch(() => undefined);
    await condition(() => done);
  }
  for (const step of plan.complete) await run(step);
  released = true;
  await condition(allHandlersFinished);
  return fill(plan.resultBytes);
}

const { noop } = proxyActivities<NoopActivities>({ startToCloseTimeout: '30s' });
const BEFORE_READY = 7;
const AFTER_COMPLETE = 2;

export async function benchBare(): Promise<string> {
  let ready = false;
  let done = false;
  let released = false;
  setHandler(benchReady, async () => {
    await condition(() => ready);
    return 'ready';
  });
  setHandler(benchComplete, async () => {
    done = true;
    await condition(() => released);
    return 'released';
  });
  for (let i = 0; i < BEFORE_READY; i++) await noop(`step-${i}`);
  ready = true;
  await condition(() => done);
  for (let i = 0; i < AFTER_COMPLETE; i++) await noop(`step-${i}`);
  released = true;
  await condition(allHandlersFinished);
  return 'done';
}
