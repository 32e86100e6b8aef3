// The local driver: the run executes on the worker's machine, in the run's cwd or a git worktree of it.
import { stat } from 'node:fs/promises';
import {
  LocalDriverConfig,
  describeZodError,
  type DriverRealization,
  type WorkspaceRealizationRecord,
} from '../contracts/index.js';
import { NonRetryableError } from '../contracts/errors.js';
import { runGit } from './git.js';
import { runProcess } from './process.js';
import type { EnvironmentDriver, RealizeInput, StepContext } from './types.js';
import { provision } from './provision.js';
import { providerOf } from '../contracts/lease-policy.js';

export { gitErrorLine } from './git.js';

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/** Git, hardened (drivers/git.ts): the repository may hold what an earlier local run's agent planted in it. */
async function git(cwd: string, args: string[]): Promise<string> {
  return (await runGit(args, { cwd })).trim(); // throws a GitError: "git <command> failed: <git's fatal line>"
}

/** Makes (or, on a retry, adopts) the run's worktree on its branch. */
async function ensureWorktree(
  repo: string,
  worktreePath: string,
  branch: string,
  baseRef: string | null,
): Promise<boolean> {
  if (await isDirectory(worktreePath)) {
    const top = await git(worktreePath, ['rev-parse', '--show-toplevel']).catch(() => '');
    const current = await git(worktreePath, ['rev-parse', '--abbrev-ref', 'HEAD']).catch(() => '');
    if (top && current === branch) return false;
    throw new NonRetryableError(`worktree path ${worktreePath} exists and is not a worktree on branch ${branch}`);
  }
  await git(repo, ['check-ref-format', '--branch', branch]);
  const branchExists = await git(repo, ['rev-parse', '--verify', '--quiet', `refs/heads/${branch}`]).then(
    () => true,
    () => false,
  );
  const args = branchExists
    ? ['worktree', 'add', '--', worktreePath, branch]
    : ['worktree', 'add', '-b', branch, '--', worktreePath, ...(baseRef ? [baseRef] : [])];
  await git(repo, args);
  return true;
}

export function createLocalDriver(): EnvironmentDriver {
  return {
    driver: 'local',
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    hostBound: () => true,
    validateConfig(config) {
      const parsed = LocalDriverConfig.safeParse(config);
      if (!parsed.success) throw new NonRetryableError(describeZodError(parsed.error, 'config'));
      return parsed.data;
    },
    async probe() {
      const shell = await stat('/bin/sh').then(
        () => true,
        () => false,
      );
      const gitOk = await git('/', ['--version']).then(
        (v) => v,
        () => null,
      );
      return {
        ok: shell,
        diagnostics: [
          shell ? { severity: 'info', message: '/bin/sh present' } : { severity: 'error', message: '/bin/sh missing' },
          gitOk
            ? { severity: 'info', message: gitOk }
            : { severity: 'warning', message: 'git not found (git_worktree unavailable)' },
        ],
      };
    },
    async acquire(_ctx, { request }) {
      return {
        provider: 'local',
        providerLeaseId: null,
        metadata: { cwd: request.workspace?.cwd ?? null },
        expiresAt: null,
      };
    },
    async realize(ctx: StepContext, input: RealizeInput): Promise<DriverRealization> {
      const { workspace } = input.request;
      if (!(await isDirectory(workspace.baseCwd)))
        throw new NonRetryableError(`cwd ${workspace.baseCwd} does not exist or is not a directory`);
      let cwd = workspace.cwd;
      if (workspace.strategy === 'git_worktree') {
        if (!workspace.branchName || !workspace.worktreePath) {
          throw new NonRetryableError(
            'workspace.branchName and workspace.worktreePath are required for strategy git_worktree',
          );
        }
        await ensureWorktree(workspace.baseCwd, workspace.worktreePath, workspace.branchName, workspace.repoRef);
        cwd = workspace.worktreePath;
      } else if (!(await isDirectory(cwd))) {
        throw new NonRetryableError(`cwd ${cwd} does not exist or is not a directory`);
      }
      const bootstrap = await provision(
        input.realizationRequest.runtimeOverlay.provisionCommand,
        input.provisionTimeoutMs,
        cwd,
        (request) => runProcess({ ...request, cwd, signal: ctx.signal, onLine: ctx.progress }),
      );
      return {
        version: 1,
        transport: 'local',
        provider: 'local',
        environmentId: input.environment.id,
        leaseId: input.lease.id,
        providerLeaseId: null,
        local: { path: cwd, strategy: workspace.strategy, branchName: workspace.branchName },
        remote: { path: cwd },
        sync: { strategy: 'none' },
        bootstrap,
        rebuild: {
          strategy: workspace.strategy,
          baseCwd: workspace.baseCwd,
          worktreePath: workspace.worktreePath,
          branchName: workspace.branchName,
        },
        summary: `Local workspace realized at ${cwd}.`,
      };
    },
    async resolveTarget(_ctx, { environment, lease, record }) {
      const cwd = record?.local.path ?? (lease.metadata?.cwd as string | undefined);
      if (!cwd) throw new Error('local lease has no realized cwd');
      if (!(await isDirectory(cwd))) throw new Error(`local cwd ${cwd} no longer exists`);
      return { kind: 'local', environmentId: environment.id, leaseId: lease.id, cwd };
    },
    async execute(ctx, { record, lease }, request) {
      const cwd = request.cwd ?? record?.local.path ?? (lease.metadata?.cwd as string | undefined);
      if (!cwd) throw new NonRetryableError('local lease has no cwd');
      return runProcess({ ...request, cwd, signal: ctx.signal });
    },
    async release() {
      // Nothing to free locally: the worktree stays for the control plane's own cleanup command.
    },
  };
}
