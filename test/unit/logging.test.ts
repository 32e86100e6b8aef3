// The worker's logger (worker/logging.ts) without a worker: the ids taken from each step's input, the SDK
// adapter, levels, redaction and errors. The process's real output is test/e2e/logs.test.ts.
import { ApplicationFailure } from '@temporalio/common';
import { LogTimestamp } from '@temporalio/worker';
import { expect, it } from 'vitest';
import { TemporalLogger, createLogger, runIdsOf, type LogLevel } from '../../worker/logging.js';

function capture(level: LogLevel) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level, destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
  return { logger, lines };
}

it('takes the run ids, and only them, from each kind of step input and output', () => {
  const config = { privateKeySecretRef: 'env:KEY', host: 'h' };
  // resolveEnvironment: the run request
  expect(runIdsOf({ companyId: 'c', heartbeatRunId: 'r', environmentId: 'e', workspace: { cwd: '/w' } })).toEqual({
    companyId: 'c',
    heartbeatRunId: 'r',
    environmentId: 'e',
  });
  // a step given the request and the environment record
  const lease = { id: 'l', companyId: 'c', heartbeatRunId: 'r', environmentId: 'e', leasePolicy: 'per_run' };
  expect(
    runIdsOf({ request: { companyId: 'c', heartbeatRunId: 'r' }, environment: { id: 'e', companyId: 'c', config } }),
  ).toEqual({ companyId: 'c', heartbeatRunId: 'r', environmentId: 'e' });
  expect(runIdsOf({ environment: { id: 'e', config }, lease, record: { metadata: { token: 't' } } })).toEqual({
    companyId: 'c',
    heartbeatRunId: 'r',
    environmentId: 'e',
    leaseId: 'l',
  });
  // releaseLease, renewLease; an activity-log row; a lease (acquireLease's output); release's output
  expect(runIdsOf({ companyId: 'c', heartbeatRunId: 'r', leaseId: 'l', outcome: 'completed' })).toEqual({
    companyId: 'c',
    heartbeatRunId: 'r',
    leaseId: 'l',
  });
  expect(
    runIdsOf({
      companyId: 'c',
      entityType: 'environment_lease',
      entityId: 'l',
      runId: 'r',
      details: { environmentId: 'e' },
    }),
  ).toEqual({ companyId: 'c', heartbeatRunId: 'r', environmentId: 'e', leaseId: 'l' });
  expect(runIdsOf(lease)).toEqual({ companyId: 'c', heartbeatRunId: 'r', environmentId: 'e', leaseId: 'l' });
  expect(runIdsOf({ leases: [lease], cleanupFailures: [] })).toEqual(runIdsOf(lease));
  // nothing to take, or nothing that is an id
  for (const v of [undefined, null, 'x', 42, [lease], {}, { companyId: 7, heartbeatRunId: 'x'.repeat(201) }]) {
    expect(runIdsOf(v)).toEqual({});
  }
});

it('routes Temporal SDK lines through the logger: level, time of emission, errors with their code', () => {
  const { logger, lines } = capture('INFO');
  const sdk = new TemporalLogger(logger);
  sdk.debug('below the level');
  sdk.info('Worker state changed', { sdkComponent: 'worker', state: 'RUNNING' });
  const nanos = 1_700_000_000_123_000_000n;
  sdk.warn('Activity failed', {
    [LogTimestamp]: nanos,
    error: ApplicationFailure.create({ type: 'lease_acquire_failed', message: 'refused', details: [{ x: 'hidden' }] }),
  });
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatchObject({
    level: 'info',
    msg: 'Worker state changed',
    sdkComponent: 'worker',
    state: 'RUNNING',
  });
  expect(lines[1]).toMatchObject({
    level: 'warn',
    time: '2023-11-14T22:13:20.123Z',
    error: { type: 'ApplicationFailure', code: 'lease_acquire_failed', message: 'refused', nonRetryable: false },
  });
  expect(JSON.stringify(lines[1])).not.toContain('hidden'); // a failure's details are not logged
});

it('censors fields named like secrets', () => {
  const { logger, lines } = capture('TRACE');
  logger.trace({ password: 'p', nested: { privateKey: 'k', token: 't' }, ok: 'v' }, 'm');
  expect(lines[0]).toMatchObject({ level: 'trace', password: '[redacted]', ok: 'v' });
  expect(lines[0]!.nested).toEqual({ privateKey: '[redacted]', token: '[redacted]' });
});
