import { describe, expect, it } from 'vitest';
import {
  CompleteRunSchema,
  RunRequestSchema,
  SshDriverConfig,
  describeZodError,
  runWorkflowId,
} from '../../contracts/index.js';

const ok = { companyId: 'co-1', heartbeatRunId: 'run-1', workspace: { baseCwd: '/w', cwd: '/w' } };
const errorOf = (input: unknown) => {
  const r = RunRequestSchema.safeParse(input);
  return r.success ? null : describeZodError(r.error, 'request');
};

describe('run request', () => {
  it('applies defaults', () => {
    expect(RunRequestSchema.parse(ok)).toMatchObject({
      adapterType: 'process',
      environmentId: null,
      leasePolicy: null,
      workspace: { strategy: 'project_primary', branchName: null, worktreePath: null },
    });
  });

  it.each([
    [{ ...ok, companyId: '' }, 'request.companyId'],
    [{ ...ok, companyId: '-oProxyCommand=sh' }, 'request.companyId'],
    [{ ...ok, heartbeatRunId: 'a/b' }, 'request.heartbeatRunId'],
    [{ ...ok, environmentId: 'not-a-uuid' }, 'request.environmentId'],
    [{ ...ok, workspace: { baseCwd: 'relative', cwd: '/w' } }, 'request.workspace.baseCwd'],
    [{ ...ok, workspace: { baseCwd: '/w', cwd: '/w/../etc' } }, 'request.workspace.cwd'],
    [{ ...ok, workspace: { baseCwd: '/w', cwd: '/w', branchName: 'x; rm -rf /' } }, 'request.workspace.branchName'],
    [
      { ...ok, workspace: { baseCwd: '/w', cwd: '/w', branchName: '--upload-pack=evil' } },
      'request.workspace.branchName',
    ],
    [{ ...ok, leasePolicy: 'forever' }, 'request.leasePolicy'],
    [{ ...ok, surprise: 1 }, 'request'],
  ])('names the bad field: %j', (input, field) => {
    expect(errorOf(input)).toContain(`${field}`);
  });

  it('derives one workflow id per company and run', () => {
    expect(runWorkflowId('co', 'r1')).toBe('envrun/co/r1');
    expect(runWorkflowId('co', 'r1')).not.toBe(runWorkflowId('co', 'r2'));
  });
});

describe('completion', () => {
  it('allows a reason only for a failed run', () => {
    expect(CompleteRunSchema.safeParse({ status: 'succeeded', failureReason: 'x' }).success).toBe(false);
    expect(CompleteRunSchema.parse({ status: 'failed', failureReason: 'x' })).toEqual({
      status: 'failed',
      failureReason: 'x',
    });
  });
});

describe('ssh config', () => {
  it('keeps only a secret reference and refuses option injection in the host', () => {
    const base = {
      host: 'build.example.com',
      username: 'agent',
      remoteWorkspacePath: '/srv/work',
      privateKeySecretRef: 'env:SSH_KEY',
    };
    expect(SshDriverConfig.parse(base)).toMatchObject({ port: 22, strictHostKeyChecking: true });
    expect(SshDriverConfig.safeParse({ ...base, host: '-oProxyCommand=touch /tmp/pwned' }).success).toBe(false);
    expect(
      SshDriverConfig.safeParse({ ...base, privateKeySecretRef: '-----BEGIN OPENSSH PRIVATE KEY-----' }).success,
    ).toBe(false);
    expect(SshDriverConfig.safeParse({ ...base, privateKey: 'inline' }).success).toBe(false);
    expect(SshDriverConfig.safeParse({ ...base, remoteWorkspacePath: 'relative' }).success).toBe(false);
  });
});
