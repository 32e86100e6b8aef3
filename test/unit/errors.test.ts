// One error base and one failure codec: what an activity encodes is what the workflow and the client
// decode, through the failures Temporal wraps it in; the client turns the same Temporal error into the same
// envrun error whichever call met it.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  WorkflowFailedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
} from '@temporalio/client';
import { RetryState } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import {
  EnvRunError,
  NO_CONTEXT,
  NonRetryableError,
  asRunFailure,
  decodeRunFailure,
  encodeRunCancelled,
  encodeRunFailure,
  isRunCancelled,
  runFailure,
  type RunFailure,
} from '../../contracts/index.js';
import { ConfigError } from '../../client/config.js';
import {
  InvalidInputError,
  NotFoundError,
  RunEndedError,
  RunFailedError,
  RunStateError,
  fromTemporal,
  toRunFailedError,
} from '../../client/errors.js';
import { TenancyError } from '../../config/tenancy.js';
import { GitError } from '../../drivers/git.js';
import { HostLostError } from '../../workflows/run-failure.js';

const failure: RunFailure = {
  code: 'lease_conflict',
  message: 'execution workspace w is already leased',
  environmentId: 'e1',
  driver: 'sandbox',
  provider: 'fake',
};

/** What the client sees of an activity's failure: activity failure → workflow failure. */
const SPENT = RetryState.MAXIMUM_ATTEMPTS_REACHED;
const asWorkflowFailed = (cause: Error) =>
  new WorkflowFailedError('workflow failed', new ActivityFailure('failed', 'x', '1', SPENT, 'w', cause), SPENT);

describe('the failure codec', () => {
  it('encodes the code as the type and the failure as the details; decodes it through its wrappers', () => {
    const encoded = encodeRunFailure(failure);
    expect(encoded).toMatchObject({ type: 'lease_conflict', message: failure.message, nonRetryable: true });
    expect(encoded.details).toEqual([failure]);
    expect(decodeRunFailure(encoded)).toEqual(failure);
    expect(decodeRunFailure(asWorkflowFailed(encoded))).toEqual(failure);
    expect(decodeRunFailure(new WorkflowUpdateFailedError('update failed', encoded))).toEqual(failure);
  });

  it('is retryable unless the code says a retry cannot help, or the caller says so', () => {
    expect(runFailure('lease_acquire_failed', 'm', NO_CONTEXT).nonRetryable).toBe(false);
    expect(runFailure('invalid_request', 'm', NO_CONTEXT).nonRetryable).toBe(true);
    expect(runFailure('lease_acquire_failed', 'm', NO_CONTEXT, { nonRetryable: true }).nonRetryable).toBe(true);
  });

  it('fills what the details leave out from the context; finds nothing in a failure without a code', () => {
    const bare = ApplicationFailure.create({ type: 'transport_resolution_failed', message: 'no route' });
    expect(decodeRunFailure(bare, { environmentId: 'e2', driver: 'ssh', provider: null })).toEqual({
      code: 'transport_resolution_failed',
      message: 'no route',
      environmentId: 'e2',
      driver: 'ssh',
      provider: null,
    });
    expect(decodeRunFailure(ApplicationFailure.create({ type: 'Error', message: 'x' }))).toBeNull();
    expect(decodeRunFailure(new Error('plain'))).toBeNull();
  });

  it("wraps a step's error into its code, keeps one that has a code, fails a NonRetryableError at once", () => {
    const context = { environmentId: 'e', driver: 'local' as const, provider: null };
    const coded = runFailure('environment_not_found', 'gone', context);
    expect(asRunFailure(coded, 'workspace_realization_failed', context)).toBe(coded);
    const wrapped = asRunFailure(new Error('disk full'), 'workspace_realization_failed', context);
    expect(wrapped).toMatchObject({ type: 'workspace_realization_failed', message: 'disk full', nonRetryable: false });
    const permanent = asRunFailure(new NonRetryableError('no bwrap'), 'lease_acquire_failed', context);
    expect(permanent).toMatchObject({ type: 'lease_acquire_failed', nonRetryable: true });
    const git = asRunFailure(
      new GitError(['worktree'], 'fatal: bad', 128, 'x'),
      'workspace_realization_failed',
      context,
    );
    expect(git.nonRetryable).toBe(false);
  });

  it('tells a cancelled run by its run_cancelled failure or a cancellation in the causes', () => {
    expect(isRunCancelled(encodeRunCancelled('cancelled before ready'))).toBe(true);
    expect(isRunCancelled(new WorkflowFailedError('x', new CancelledFailure('cancelled'), SPENT))).toBe(true);
    expect(isRunCancelled(asWorkflowFailed(encodeRunFailure(failure)))).toBe(false);
  });

  it('imports no Node module and no zod: workflow code imports it', () => {
    const source = readFileSync(fileURLToPath(new URL('../../contracts/errors.ts', import.meta.url)), 'utf8');
    const imports = [...source.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
    expect(imports.sort()).toEqual(['./common.js', './constants.js', '@temporalio/common']);
    expect(source).toMatch(/^import type .* from '\.\/common\.js';$/m);
  });
});

describe("the client's errors", () => {
  const run = 'run r of company c';

  it('maps each Temporal error one way, whichever call met it', () => {
    const failed = fromTemporal(new WorkflowUpdateFailedError('update failed', encodeRunFailure(failure)), run);
    expect(failed).toBeInstanceOf(RunFailedError);
    expect((failed as RunFailedError).toJSON()).toEqual(failure);

    const refused = fromTemporal(new WorkflowUpdateFailedError('x', new Error('the run is leasing, not ready')), run);
    expect(refused).toBeInstanceOf(RunStateError);
    expect(refused).toMatchObject({ code: 'invalid_state', message: 'the run is leasing, not ready' });

    const missing = fromTemporal(new WorkflowNotFoundError('not found', 'envrun/c/r', undefined), run);
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing).toMatchObject({ code: 'not_found', message: 'run r of company c not found' });

    const cancelled = fromTemporal(new WorkflowFailedError('x', new CancelledFailure('cancelled'), SPENT), run);
    expect(cancelled).toMatchObject({ code: 'run_cancelled' });

    const other = new Error('connection refused');
    expect(fromTemporal(other, run)).toBe(other);
    const own = new InvalidInputError('companyId: bad');
    expect(fromTemporal(own, run)).toBe(own);
    expect(toRunFailedError(other)).toBeNull();
  });

  it('every envrun error is an EnvRunError with a code', () => {
    const errors: EnvRunError[] = [
      new RunFailedError(failure),
      new InvalidInputError('x'),
      new RunStateError('x'),
      new RunEndedError('x', 'completed', 'succeeded'),
      new NotFoundError('x'),
      new ConfigError('x'),
      new TenancyError('x'),
      new NonRetryableError('x'),
      new GitError(['status'], '', 1, 'x'),
      new HostLostError('h1'),
    ];
    expect(errors.map((e) => [e.name, e.code])).toEqual([
      ['RunFailedError', 'lease_conflict'],
      ['InvalidInputError', 'invalid_request'],
      ['RunStateError', 'invalid_state'],
      ['RunEndedError', 'run_ended'],
      ['NotFoundError', 'not_found'],
      ['ConfigError', 'invalid_configuration'],
      ['TenancyError', 'not_permitted'],
      ['NonRetryableError', 'non_retryable'],
      ['GitError', 'git_failed'],
      ['HostLostError', 'environment_host_lost'],
    ]);
    for (const e of errors) expect(e).toBeInstanceOf(EnvRunError);
  });

  it('no exported error class of envrun extends Error directly: each extends the base', () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (name.endsWith('.ts') && /export class \w+ extends Error\b/.test(readFileSync(path, 'utf8'))) {
          offenders.push(path.slice(root.length));
        }
      }
    };
    for (const folder of [
      'contracts',
      'config',
      'store',
      'drivers',
      'leases',
      'activities',
      'workflows',
      'client',
      'worker',
    ]) {
      walk(join(root, folder));
    }
    expect(offenders).toEqual([]);
  });
});
