// The ssh driver: the run executes on a remote host over OpenSSH (the `ssh2` library). The connection (key
// and host-key checks, commands) is in connection.ts; shipping the workspace there and back, in archive.ts.
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import {
  SshDriverConfig,
  describeZodError,
  sshSpecOf,
  type Environment,
  type EnvironmentLease,
  type DriverRealization,
  type WorkspaceRealizationRecord,
} from '../../contracts/index.js';
import { reuseKeyOf, providerOf } from '../../contracts/lease-policy.js';
import { NonRetryableError } from '../../contracts/errors.js';
import type { ProviderExecRequest } from '../providers/contract.js';
import { provision } from '../provision.js';
import type { EnvironmentDriver, StepContext } from '../types.js';
import { syncBackReport } from '../sync/safe-copy.js';
import { isGitRoot, syncBack, upload } from './archive.js';
import { mustSucceed, remoteCommand, remoteExec, shellQuote, withConnection, type SshConfig } from './connection.js';

function leasePath(lease: EnvironmentLease): string {
  const m = /^ssh:\/\/[^/]+(\/.*)$/.exec(lease.providerLeaseId ?? '');
  if (!m?.[1]) throw new NonRetryableError(`lease ${lease.id} has no ssh lease path`);
  return m[1];
}

export function createSshDriver(): EnvironmentDriver {
  const parse = (environment: Environment): SshConfig => {
    const r = SshDriverConfig.safeParse(environment.config);
    if (!r.success) throw new NonRetryableError(describeZodError(r.error, 'config'));
    return r.data;
  };
  const workspaceOf = (lease: EnvironmentLease) => posix.join(leasePath(lease), 'workspace');

  return {
    driver: 'ssh',
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    validateConfig(config) {
      const r = SshDriverConfig.safeParse(config);
      if (!r.success) throw new NonRetryableError(describeZodError(r.error, 'config'));
      return r.data;
    },
    async probe(environment) {
      const config = parse(environment);
      try {
        const res = await withConnection(config, (c) =>
          remoteExec(c, {
            command: `test -d ${shellQuote(config.remoteWorkspacePath)} || mkdir -p -- ${shellQuote(config.remoteWorkspacePath)}; uname -sm`,
            timeoutMs: 15_000,
          }),
        );
        return {
          ok: res.exitCode === 0,
          diagnostics: [
            { severity: 'info', message: `connected to ${config.username}@${config.host}:${config.port}` },
            {
              severity: res.exitCode === 0 ? 'info' : 'error',
              message: res.stdout.trim() || res.stderr.trim(),
            },
          ],
        };
      } catch (err) {
        return { ok: false, diagnostics: [{ severity: 'error', message: (err as Error).message }] };
      }
    },
    async acquire(ctx: StepContext, { environment, lease }) {
      const config = parse(environment);
      const name =
        reuseKeyOf(environment, lease) ??
        `${lease.heartbeatRunId ?? lease.id}-${createHash('sha256').update(ctx.idempotencyKey).digest('hex').slice(0, 12)}`;
      const path = posix.join(config.remoteWorkspacePath, name);
      await withConnection(config, (c) => mustSucceed(c, 'mkdir of the run folder', `mkdir -p -- ${shellQuote(path)}`));
      return {
        provider: 'ssh',
        providerLeaseId: `ssh://${config.username}@${config.host}:${config.port}${path}`,
        metadata: { remotePath: path },
        expiresAt: null,
      };
    },
    async realize(ctx, input): Promise<DriverRealization> {
      const config = parse(input.environment);
      const remote = workspaceOf(input.lease);
      const local = input.request.workspace.cwd;
      const git = await isGitRoot(local);
      const bootstrap = await withConnection(config, async (c) => {
        const bytes = await upload(c, local, remote, git, ctx.signal);
        ctx.progress?.(`uploaded ${bytes} bytes from ${local} to ${remote}`);
        return provision(
          input.realizationRequest.runtimeOverlay.provisionCommand,
          input.provisionTimeoutMs,
          remote,
          (req) =>
            remoteExec(c, {
              ...remoteCommand(req.cwd ?? remote, req.env, req.command, req.args),
              timeoutMs: req.timeoutMs,
              signal: ctx.signal,
              onLine: ctx.progress,
            }),
        );
      });
      return {
        version: 1,
        transport: 'ssh',
        provider: 'ssh',
        environmentId: input.environment.id,
        leaseId: input.lease.id,
        providerLeaseId: input.lease.providerLeaseId,
        local: {
          path: local,
          strategy: input.request.workspace.strategy,
          branchName: input.request.workspace.branchName,
        },
        remote: { path: remote, host: config.host, port: config.port, username: config.username },
        sync: { strategy: git ? 'ssh_git_import_export' : 'ssh_archive_upload_download' },
        bootstrap,
        rebuild: { remoteWorkspacePath: config.remoteWorkspacePath, localPath: local },
        summary: `SSH workspace realized at ${config.username}@${config.host}:${config.port}:${remote}.`,
      };
    },
    async resolveTarget(_ctx, { environment, lease, record }) {
      const config = parse(environment);
      const remoteCwd = record?.remote.path ?? workspaceOf(lease);
      await withConnection(config, (c) => mustSucceed(c, 'remote workspace check', `test -d ${shellQuote(remoteCwd)}`));
      return {
        kind: 'remote',
        transport: 'ssh',
        environmentId: environment.id,
        leaseId: lease.id,
        remoteCwd,
        spec: sshSpecOf(config, remoteCwd),
      };
    },
    async execute(ctx, { environment, lease, record }, request: ProviderExecRequest) {
      const config = parse(environment);
      const cwd = request.cwd ?? record?.remote.path ?? workspaceOf(lease);
      return withConnection(config, (c) =>
        remoteExec(c, {
          ...remoteCommand(cwd, request.env, request.command, request.args),
          stdin: request.stdin,
          stdinStream: request.stdinStream,
          timeoutMs: request.timeoutMs,
          signal: ctx.signal,
          onOutput: request.onOutput,
          onStarted: request.onStarted,
        }),
      );
    },
    async release(ctx, { environment, lease, keep }) {
      if (!lease.providerLeaseId) return;
      const config = parse(environment);
      const path = leasePath(lease);
      const realization = lease.metadata?.workspaceRealization as WorkspaceRealizationRecord | undefined;
      return withConnection(config, async (c) => {
        // Sync the run's changes back into the local workspace before the remote copy goes.
        const synced = realization ? await syncBack(c, realization, ctx) : null;
        if (!keep) await mustSucceed(c, 'removal of the run folder', `rm -rf -- ${shellQuote(path)}`);
        // What was held back or flagged goes on the lease's record and its release's log row.
        return synced ? { metadata: { syncBack: syncBackReport(synced) } } : undefined;
      });
    },
    async destroy(_ctx, { environment, lease }) {
      // A run folder a release kept (reuse, retention): removed once nothing will use it.
      const path = leasePath(lease);
      await withConnection(parse(environment), (c) =>
        mustSucceed(c, 'removal of the kept run folder', `rm -rf -- ${shellQuote(path)}`),
      );
    },
  };
}
