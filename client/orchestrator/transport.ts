// How the adapter reaches the workspace: the ssh connection of an ssh environment's lease, and a run's
// execution target as the control plane's adapters read it (a sandbox target with its runner, an ssh target
// with its key when the orchestrator hands keys out).
import type { z } from 'zod';
import {
  SshDriverConfig,
  describeZodError,
  sshSpecOf,
  type ExecutionTarget,
  type SshExecutionSpec,
} from '../../contracts/index.js';
import { EnvironmentRunError, message } from './errors.js';
import type { ResolveTransportSchema } from './inputs.js';
import type { SandboxCommandRunner } from './runner.js';
import type { AdapterWorkspaceRealization, OrchestratorExecutionTarget, SshRemoteExecution } from './shapes.js';

/** The private key of an ssh connection, or null when the orchestrator does not hand keys out. */
export type PrivateKeyOf = (spec: SshExecutionSpec) => Promise<string | null>;

/** The ssh connection of an ssh environment's lease (null for other drivers). */
export async function sshTransport(
  { environment, leaseMetadata }: z.output<typeof ResolveTransportSchema>,
  privateKeyOf: PrivateKeyOf,
): Promise<SshRemoteExecution | null> {
  if (environment.driver !== 'ssh') return null;
  try {
    const parsed = SshDriverConfig.safeParse(environment.config);
    if (!parsed.success) throw new Error(describeZodError(parsed.error, 'environment.config'));
    const config = parsed.data;
    // Where the lease says the workspace is, else where the realization put it, else the host's root.
    const realized = leaseMetadata?.workspaceRealization as { remote?: { path?: unknown } } | undefined;
    const remoteCwd =
      (typeof leaseMetadata?.remoteCwd === 'string' && leaseMetadata.remoteCwd.trim()) ||
      (typeof realized?.remote?.path === 'string' && realized.remote.path) ||
      config.remoteWorkspacePath;
    const spec = sshSpecOf(config, remoteCwd);
    return { ...spec, privateKey: await privateKeyOf(spec) };
  } catch (err) {
    throw new EnvironmentRunError(
      'transport_resolution_failed',
      `cannot resolve the execution transport of environment ${environment.id}: ${message(err)}`,
      { environmentId: environment.id, driver: environment.driver, cause: err },
    );
  }
}

/** The run's execution target for the control plane's adapters; `runnerOf` makes a sandbox target's runner. */
export async function controlPlaneTarget(
  target: ExecutionTarget,
  runnerOf: (timeoutMs: number | null) => SandboxCommandRunner,
  privateKeyOf: PrivateKeyOf,
): Promise<OrchestratorExecutionTarget | null> {
  if (!target) return null;
  const workspaceRealization: AdapterWorkspaceRealization = {
    mode: 'copy',
    authoritativeRoot: target.kind === 'local' ? target.cwd : target.remoteCwd,
    pathAliases: [],
    outboundRestorePaths: [],
  };
  if (target.kind === 'local') return { ...target, workspaceRealization };
  if (target.transport === 'sandbox') {
    const runner = runnerOf(target.timeoutMs);
    return { ...target, runner, workspaceRealization };
  }
  return {
    ...target,
    spec: { ...target.spec, privateKey: await privateKeyOf(target.spec) },
    workspaceRealization,
  };
}
