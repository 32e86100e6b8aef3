// `envrun run …`: start a run (and wait for its target), read it, complete, renew, retry, list and cancel
// runs (commands in a run's target: commands-io.ts). Declared in commands.ts.
import { z } from 'zod';
import {
  ErrorCodeSchema,
  PROVIDER_RESOURCE_DISPOSITIONS,
  ExternalId,
  RunPhaseSchema,
  RunRequestSchema,
  type RunRequestInput,
  type RunResult,
} from '../../contracts/index.js';
import { readSetting } from '../../config/settings.js';
import { checkWorkspacePath, loadTenancy, TenancyError } from '../../config/tenancy.js';
import { InvalidInputError, NotFoundError, RunFailedError } from '../errors.js';
import type { EnvRunClient } from '../runs.js';
import { withRuns } from './connect.js';
import { check, fail, localPath, millis, runOf, type RunOptions } from './input.js';
import { print, progress, type Output } from './output.js';

interface StartOptions extends RunOptions {
  env?: string;
  cwd: string;
  adapter: string;
  provision?: string;
  workspace?: string;
  issue?: string;
  leasePolicy?: RunRequestInput['leasePolicy'];
  worktree?: string;
  branch?: string;
  awaitRetryMs?: string;
  leaseTtlMs?: string;
  hostPickupMs?: string;
  wait?: boolean;
  waitThroughRetry?: boolean;
}

/**
 * With ENVRUN_WORKSPACE_ROOTS set where the CLI runs, a run's paths are held to its company's roots before
 * anything starts (the worker holds them to its own roots in any case).
 */
function checkRoots(companyId: string, paths: Array<[string | undefined, string]>): void {
  if (readSetting('ENVRUN_WORKSPACE_ROOTS') === undefined) return;
  const tenancy = loadTenancy(process.env, readSetting('ENVRUN_DATA_DIR')); // a bad value: a ConfigError naming it
  for (const [path, field] of paths) {
    if (path === undefined) continue;
    try {
      checkWorkspacePath(tenancy, companyId, path, field);
    } catch (err) {
      if (err instanceof TenancyError) throw new InvalidInputError(err.message);
      throw err;
    }
  }
}

export async function startRun(o: StartOptions): Promise<void> {
  const cwd = localPath(o.cwd, '--cwd');
  const worktree = o.worktree === undefined ? undefined : localPath(o.worktree, '--worktree');
  const request: RunRequestInput = {
    companyId: o.company,
    heartbeatRunId: o.run,
    environmentId: o.env ?? null,
    executionWorkspaceId: o.workspace ?? null,
    issueId: o.issue ?? null,
    adapterType: o.adapter,
    leasePolicy: o.leasePolicy ?? null,
    workspace: worktree
      ? {
          baseCwd: cwd,
          cwd: worktree,
          strategy: 'git_worktree',
          worktreePath: worktree,
          branchName: o.branch ?? null,
        }
      : { baseCwd: cwd, cwd },
    runtimeOverlay: o.provision ? { provisionCommand: o.provision } : {},
    ...(o.awaitRetryMs !== undefined ? { awaitRetryMs: check(millis(0), o.awaitRetryMs, '--await-retry-ms') } : {}),
    ...(o.leaseTtlMs !== undefined ? { leaseTtlMs: check(millis(1000), o.leaseTtlMs, '--lease-ttl-ms') } : {}),
    ...(o.hostPickupMs !== undefined ? { hostPickupMs: check(millis(500), o.hostPickupMs, '--host-pickup-ms') } : {}),
  };
  if (worktree && !o.branch) fail('--branch', 'required with --worktree');
  check(ExternalId, o.company, '--company');
  check(ExternalId, o.run, '--run');
  check(RunRequestSchema, request, 'request'); // before connecting: bad input starts nothing
  checkRoots(o.company, [
    [cwd, '--cwd'],
    [worktree, '--worktree'],
  ]);
  await withRuns(async (c) => {
    if (o.wait) {
      const result = await waitWithPhases(c, request, { throughRetry: Boolean(o.waitThroughRetry) });
      print(o, result, () => `ready\t${JSON.stringify(result.executionTarget)}`);
    } else {
      const started = await c.startRun(request);
      print(o, started, () => `${started.started ? 'started' : 'exists'}\t${started.workflowId}`);
    }
  });
}

export async function runStatus(o: RunOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const state = await withRuns((c) => c.getRun(companyId, runId));
  if (!state) throw new NotFoundError(`run ${runId} of company ${companyId} not found`);
  print(o, state, () =>
    [
      `phase\t${state.phase}`,
      `workflow\t${state.workflowId}`,
      `environment\t${state.environmentId ?? '-'} (${state.driver ?? '-'})`,
      `lease\t${state.leaseId ?? '-'}`,
      `target\t${state.result ? JSON.stringify(state.result.executionTarget) : '-'}`,
      ...(state.expiresAt ? [`expires\t${state.expiresAt}`] : []),
      ...(state.error ? [`error\t${state.error.code}: ${state.error.message}`] : []),
      ...(state.lastError && !state.error ? [`last error\t${state.lastError.code}: ${state.lastError.message}`] : []),
      ...(state.operatorRetries ? [`operator retries\t${state.operatorRetries}`] : []),
      ...Object.entries(state.timestamps).map(([phase, at]) => `${phase}\t${at ?? '-'}`),
    ].join('\n'),
  );
}

/** What the control plane says about the sandbox after the run (`--disposition`, `--cancel-active-work`). */
interface ReleaseOptions {
  disposition?: string;
  cancelActiveWork?: boolean;
}

function releaseRequest(o: ReleaseOptions) {
  return {
    ...(o.disposition !== undefined
      ? { providerResourceDisposition: check(z.enum(PROVIDER_RESOURCE_DISPOSITIONS), o.disposition, '--disposition') }
      : {}),
    ...(o.cancelActiveWork ? { cancelActiveWork: true } : {}),
  };
}

export async function completeRun(
  o: RunOptions & ReleaseOptions & { failed?: boolean; reason?: string },
): Promise<void> {
  const [companyId, runId] = runOf(o);
  if (o.reason && !o.failed) fail('--reason', 'only with --failed');
  const status = o.failed ? ('failed' as const) : ('succeeded' as const);
  const completion = { status, failureReason: o.reason ?? null, ...releaseRequest(o) };
  const state = await withRuns((c) => c.completeRun(companyId, runId, completion));
  print(o, state, () => `${state.phase}\t${state.releasedLeases.map((l) => `${l.id}:${l.status}`).join(' ')}`);
  if (state.error) throw new RunFailedError(state.error);
}

export async function renewRun(o: RunOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const state = await withRuns((c) => c.renewRun(companyId, runId));
  print(o, state, () => `renewed\texpires ${state.expiresAt}`);
}

export async function retryRun(
  o: Output & { company?: string; run?: string; phase?: string; environment?: string },
): Promise<void> {
  if (o.phase) {
    if (o.run) fail('--run', 'not with --phase');
    const filter = {
      // An empty value is refused, never read as "no filter" (that would retry every company's runs).
      ...(o.company !== undefined ? { companyId: check(ExternalId, o.company, '--company') } : {}),
      ...(o.environment !== undefined ? { environmentId: check(z.uuid(), o.environment, '--environment') } : {}),
    };
    const retried = await withRuns((c) => c.retryAwaiting(filter));
    print(o, retried, () => retried.map((r) => `retried\t${r.workflowId}`).join('\n') || '(no run awaiting retry)');
    return;
  }
  if (!o.company || !o.run) fail('--run', 'give --company and --run, or --phase awaiting_retry');
  const [companyId, runId] = runOf({ ...o, company: o.company, run: o.run });
  const state = await withRuns((c) => c.retryRealization(companyId, runId));
  print(o, state, () => `retried\t${state.workflowId}\t${state.phase}`);
}

export async function listRuns(
  o: Output & { company?: string; phase?: string; errorCode?: string; environment?: string },
): Promise<void> {
  if (o.phase) check(RunPhaseSchema, o.phase, '--phase');
  if (o.errorCode) check(ErrorCodeSchema, o.errorCode, '--error-code');
  const filter = { companyId: o.company, phase: o.phase, errorCode: o.errorCode, environmentId: o.environment };
  const runs = await withRuns((c) => c.listRuns(filter));
  print(
    o,
    runs,
    () =>
      runs.map((r) => `${r.workflowId}\t${r.phase ?? '-'}\t${r.errorCode ?? '-'}\t${r.status}`).join('\n') || '(none)',
  );
}

export async function cancelRun(o: RunOptions & ReleaseOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const release = releaseRequest(o);
  await withRuns((c) => c.cancelRun(companyId, runId, release));
  print(o, { cancelled: true }, () => 'cancelled');
}

/**
 * Starts the run and waits until it is ready, printing each phase change on stderr as it happens. A run
 * that enters awaiting_retry ends the wait (unless `throughRetry`): the error and the command that retries
 * it are printed, and the command fails with the run's error code.
 */
async function waitWithPhases(
  runs: EnvRunClient,
  request: RunRequestInput,
  options: { throughRetry: boolean },
): Promise<RunResult> {
  const { companyId, heartbeatRunId } = request;
  const ready = runs.startRunAndWaitReady(request);
  let settled = false;
  const done = ready.finally(() => {
    settled = true;
  });
  let last: string | null = null;
  const watch = (async (): Promise<RunResult | never> => {
    for (;;) {
      if (settled) return done;
      const phase = await runs.phaseOf(companyId, heartbeatRunId).catch(() => null);
      if (phase && phase !== last) {
        last = phase;
        progress(`phase ${phase}`);
        if (phase === 'awaiting_retry' && !options.throughRetry) {
          const state = await runs.getRun(companyId, heartbeatRunId);
          const error = state?.lastError ?? state?.error;
          if (error) {
            progress(`${error.code}: ${error.message}`);
            progress(`retry with: envrun run retry --company ${companyId} --run ${heartbeatRunId}`);
            throw new RunFailedError(error);
          }
        }
      }
      await Promise.race([done.catch(() => undefined), new Promise((r) => setTimeout(r, 250))]);
    }
  })();
  const result = await Promise.race([done, watch]);
  if (last !== 'ready') progress('phase ready');
  return result;
}
