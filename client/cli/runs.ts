// `envrun run …`: start a run (and wait for its target), read it, complete, renew, retry, list and cancel
// runs, and run a command in a ready run's target.
import { Option, type Command } from 'commander';
import { z } from 'zod';
import {
  ErrorCodeSchema,
  ExternalId,
  RunPhaseSchema,
  RunRequestSchema,
  type RunRequestInput,
  type RunResult,
} from '../../contracts/index.js';
import { EnvRunError, NotFoundError } from '../errors.js';
import type { EnvRunClient } from '../runs.js';
import { withRuns } from './connect.js';
import { check, company, fail, json, localPath, millis, parseEnvAssignments, runOpt } from './input.js';
import { print, progress } from './output.js';

export function addRunCommands(program: Command): void {
  const run = program.command('run').description('environment runs').exitOverride();
  run
    .command('start')
    .description('start a run (and with --wait, wait for its execution target)')
    .addOption(company())
    .addOption(runOpt())
    .option('--env <id>', "environment id (default: the company's local environment)")
    .requiredOption('--cwd <path>', 'the workspace on this machine')
    .option('--adapter <type>', 'agent adapter type', 'process')
    .option('--provision <cmd>', 'provision command run in the realized workspace')
    .option('--workspace <id>', 'persisted execution workspace id')
    .option('--issue <id>', 'issue id')
    .addOption(
      new Option('--lease-policy <policy>').choices([
        'ephemeral',
        'reuse_by_environment',
        'reuse_by_execution_workspace',
        'retain_on_failure',
      ]),
    )
    .option('--worktree <path>', 'realize as a git worktree at this path (needs --branch)')
    .option('--branch <name>', 'branch of the git worktree')
    .option(
      '--await-retry-ms <ms>',
      'how long a failed realization waits in awaiting_retry for an operator (0: fail at once)',
    )
    .option('--lease-ttl-ms <ms>', 'a ready run not renewed or completed within this time expires')
    .option('--host-pickup-ms <ms>', "how long a step may wait for its resource's host before the host is checked")
    .option('--wait', 'wait until ready and print the execution target; phase changes go to stderr')
    .option('--wait-through-retry', 'with --wait: keep waiting while the run awaits an operator retry')
    .addOption(json())
    .action(async (o) => {
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
        ...(o.hostPickupMs !== undefined
          ? { hostPickupMs: check(millis(500), o.hostPickupMs, '--host-pickup-ms') }
          : {}),
      };
      if (worktree && !o.branch) fail('--branch', 'required with --worktree');
      check(ExternalId, o.company, '--company');
      check(ExternalId, o.run, '--run');
      check(RunRequestSchema, request, 'request'); // before connecting: bad input starts nothing
      await withRuns(async (c) => {
        if (o.wait) {
          const result = await waitWithPhases(c, request, { throughRetry: Boolean(o.waitThroughRetry) });
          print(o, result, () => `ready\t${JSON.stringify(result.executionTarget)}`);
        } else {
          const started = await c.startRun(request);
          print(o, started, () => `${started.started ? 'started' : 'exists'}\t${started.workflowId}`);
        }
      });
    });
  run
    .command('status')
    .description('phase, lease, target and error of a run')
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
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
          ...(state.lastError && !state.error
            ? [`last error\t${state.lastError.code}: ${state.lastError.message}`]
            : []),
          ...(state.operatorRetries ? [`operator retries\t${state.operatorRetries}`] : []),
          ...Object.entries(state.timestamps).map(([phase, at]) => `${phase}\t${at ?? '-'}`),
        ].join('\n'),
      );
    });
  run
    .command('complete')
    .description('the agent is done: release the lease')
    .addOption(company())
    .addOption(runOpt())
    .option('--failed', 'the agent failed')
    .option('--reason <text>', 'failure reason (with --failed)')
    .addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      if (o.reason && !o.failed) fail('--reason', 'only with --failed');
      const status = o.failed ? ('failed' as const) : ('succeeded' as const);
      const completion = { status, failureReason: o.reason ?? null };
      const state = await withRuns((c) => c.completeRun(companyId, runId, completion));
      print(o, state, () => `${state.phase}\t${state.releasedLeases.map((l) => `${l.id}:${l.status}`).join(' ')}`);
      if (state.error) throw new EnvRunError(state.error);
    });
  run
    .command('renew')
    .description("the control plane is alive: push the lease's expiry out by its TTL")
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const state = await withRuns((c) => c.renewRun(companyId, runId));
      print(o, state, () => `renewed\texpires ${state.expiresAt}`);
    });
  run
    .command('retry')
    .description('retry a failed realization: one run (--company --run), or every run --phase awaiting_retry')
    .option('--company <id>')
    .option('--run <id>')
    .addOption(new Option('--phase <phase>').choices(['awaiting_retry']))
    .option('--environment <id>', 'with --phase: only runs on this environment')
    .addOption(json())
    .action(async (o) => {
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
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const state = await withRuns((c) => c.retryRealization(companyId, runId));
      print(o, state, () => `retried\t${state.workflowId}\t${state.phase}`);
    });
  run
    .command('list')
    .description('runs from Temporal visibility')
    .option('--company <id>')
    .option('--phase <phase>')
    .option('--error-code <code>')
    .option('--environment <id>')
    .addOption(json())
    .action(async (o) => {
      if (o.phase) check(RunPhaseSchema, o.phase, '--phase');
      if (o.errorCode) check(ErrorCodeSchema, o.errorCode, '--error-code');
      const filter = { companyId: o.company, phase: o.phase, errorCode: o.errorCode, environmentId: o.environment };
      const runs = await withRuns((c) => c.listRuns(filter));
      print(
        o,
        runs,
        () =>
          runs.map((r) => `${r.workflowId}\t${r.phase ?? '-'}\t${r.errorCode ?? '-'}\t${r.status}`).join('\n') ||
          '(none)',
      );
    });
  run
    .command('cancel')
    .description('cancel a run; its lease is released')
    .addOption(company())
    .addOption(runOpt())
    .addOption(json())
    .action(async (o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      await withRuns((c) => c.cancelRun(companyId, runId));
      print(o, { cancelled: true }, () => 'cancelled');
    });
  run
    .command('exec')
    .description("run a command in a ready run's target, with only the explicit environment")
    .addOption(company())
    .addOption(runOpt())
    .option('--env-var <NAME=VALUE...>', 'environment variables for the command (nothing else is passed)')
    .option('--timeout <ms>', 'timeout in milliseconds', '600000')
    .argument('<command>')
    .argument('[args...]')
    .addOption(json())
    .action(async (command: string, args: string[], o) => {
      const [companyId, runId] = [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
      const env = parseEnvAssignments(o.envVar);
      const timeoutMs = check(millis(1), o.timeout, '--timeout');
      const result = await withRuns((c) => c.exec(companyId, runId, { command, args, env, timeoutMs }));
      if (o.json) console.log(JSON.stringify(result, null, 2));
      else {
        process.stdout.write(result.stdout);
        process.stderr.write(result.stderr);
      }
      process.exitCode = result.exitCode ?? (result.timedOut ? 124 : 128);
    });
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
            throw new EnvRunError(error);
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
