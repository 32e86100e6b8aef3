// The ssh driver called directly (no Temporal): acquire, realize (upload + provision), exec, release
// (sync-back + removal), against a real sshd, collecting the progress lines the driver reports.
import { randomUUID } from 'node:crypto';
import type { DriverRealization, Environment, EnvironmentLease } from '../../contracts/index.js';
import { createSshDriver } from '../../drivers/ssh/index.js';
import type { StepContext } from '../../drivers/types.js';
import type { Sshd } from './sshd.js';

export interface DirectRun {
  lease: EnvironmentLease;
  record: DriverRealization;
  remoteCwd: string;
  progress: string[];
  exec(script: string): Promise<{ exitCode: number | null; stdout: string; stderr: string }>;
  /** Syncs back and removes the run folder; rejects with the driver's error. */
  release(): Promise<void>;
}

export function directSsh(sshd: Sshd, keyVar: string, remoteWorkspacePath: string) {
  const driver = createSshDriver();
  const now = new Date();
  const environment = {
    id: `env-${randomUUID().slice(0, 8)}`,
    companyId: 'co-direct',
    name: 'ssh-direct',
    description: null,
    driver: 'ssh',
    status: 'active',
    config: driver.validateConfig({
      host: '127.0.0.1',
      port: sshd.port,
      username: sshd.username,
      remoteWorkspacePath,
      privateKeySecretRef: `env:${keyVar}`,
      knownHosts: sshd.knownHosts,
    }),
    metadata: null,
    createdAt: now,
    updatedAt: now,
  } as unknown as Environment;

  return {
    driver,
    environment,
    /** Acquires and realizes a run of `cwd` (provisionCommand runs on the ssh host, in the workspace). */
    async start(cwd: string, provisionCommand: string | null = null, timeoutMs = 60_000): Promise<DirectRun> {
      const progress: string[] = [];
      const runId = `run-${randomUUID().slice(0, 8)}`;
      const ctx: StepContext = { attempt: 1, idempotencyKey: runId, progress: (line) => progress.push(line) };
      let lease = {
        id: `lease-${runId}`,
        companyId: environment.companyId,
        environmentId: environment.id,
        executionWorkspaceId: null,
        issueId: null,
        heartbeatRunId: runId,
        status: 'active',
        leasePolicy: 'ephemeral',
        provider: 'ssh',
        providerLeaseId: null,
        acquiredAt: now,
        lastUsedAt: now,
        expiresAt: null,
        releasedAt: null,
        failureReason: null,
        cleanupStatus: null,
        metadata: {},
        createdAt: now,
        updatedAt: now,
      } as unknown as EnvironmentLease;
      const request = {
        companyId: environment.companyId,
        heartbeatRunId: runId,
        workspace: {
          baseCwd: cwd,
          cwd,
          strategy: 'project_primary',
          branchName: null,
          worktreePath: null,
          repoRef: null,
        },
      } as never;
      const acquired = await driver.acquire(ctx, { environment, lease, request });
      lease = { ...lease, providerLeaseId: acquired.providerLeaseId, metadata: acquired.metadata };
      const record = (await driver.realize!(ctx, {
        environment,
        lease,
        request,
        realizationRequest: { runtimeOverlay: { provisionCommand } } as never,
        provisionTimeoutMs: timeoutMs,
      }))!;
      lease = { ...lease, metadata: { ...lease.metadata, workspaceRealization: record } };
      const leased = lease;
      return {
        lease,
        record,
        remoteCwd: record.remote.path,
        progress,
        exec: (script) =>
          driver.execute(
            ctx,
            { environment, lease: leased, record },
            { command: '/bin/sh', args: ['-c', script], env: {}, timeoutMs },
          ),
        release: async () => {
          await driver.release(ctx, { environment, lease: leased, keep: false });
        },
      };
    },
  };
}
