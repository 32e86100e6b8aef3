import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import { expect } from 'vitest';
import { RunFailedError } from '../../client/errors.js';
import type { ErrorCode, RunRequestInput } from '../../contracts/index.js';
import { runWorkflowId } from '../../contracts/index.js';
import type { Harness } from './harness.js';
import { uniqueId } from './harness.js';

export function tempWorkspace(): string {
  return mkdtempSync(join(tmpdir(), 'envrun-ws-'));
}

export function runRequest(overrides: Partial<RunRequestInput> & { cwd?: string } = {}): RunRequestInput {
  const { cwd = tempWorkspace(), ...rest } = overrides;
  return {
    companyId: uniqueId('co'),
    heartbeatRunId: uniqueId('run'),
    workspace: { baseCwd: cwd, cwd },
    ...rest,
  };
}

/** Awaits a promise that must fail with a RunFailedError of the given code. */
export async function expectRunError(
  promise: Promise<unknown>,
  code: ErrorCode | 'run_cancelled',
): Promise<RunFailedError> {
  const err = await promise.then(
    () => {
      throw new Error(`expected the run to fail with ${code}, but it succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RunFailedError);
  expect((err as RunFailedError).code, (err as Error).message).toBe(code);
  return err as RunFailedError;
}

/**
 * The steps the workflow ran, in order, read from its real history: scheduled activities, and local
 * activities (recorded as markers); `local:` marks the latter.
 */
export async function scheduledActivities(h: Harness, companyId: string, heartbeatRunId: string): Promise<string[]> {
  const history = await h.client.temporal.workflow.getHandle(runWorkflowId(companyId, heartbeatRunId)).fetchHistory();
  return (history.events ?? []).flatMap((e) => {
    const scheduled = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (scheduled) return [scheduled];
    const marker = e.markerRecordedEventAttributes;
    const data = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0] : undefined;
    if (!data) return [];
    const { activity_type: type } = defaultPayloadConverter.fromPayload<{ activity_type: string }>(data);
    return [`local:${type}`];
  });
}

/** Waits for the workflow to close and returns how it ended. */
export async function runEnd(h: Harness, companyId: string, heartbeatRunId: string): Promise<unknown> {
  return h.client.temporal.workflow
    .getHandle(runWorkflowId(companyId, heartbeatRunId))
    .result()
    .then(
      (r) => r,
      (e: unknown) => e,
    );
}

/** Polls until the probe answers something truthy, and returns it. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 120));
  }
}
