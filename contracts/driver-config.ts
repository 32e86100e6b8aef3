import { z } from 'zod';
import { AbsolutePath, DriverSchema, LeasePolicySchema, SecretRef } from './common.js';
import { EgressConfig } from './egress.js';
import type { Driver } from './constants.js';
import type { SshExecutionSpec } from './target.js';
import { WarmPoolSchema } from './pool.js';

export { SecretRef };

/** Keys of sandbox providers: lower case, digits, dot, dash and underscore. */
export const ProviderKey = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]*$/, 'must match ^[a-z0-9][a-z0-9._-]*$')
  .max(64);

const common = {
  /** Default lease policy of runs on this environment (a run request may override it). */
  leasePolicy: LeasePolicySchema.optional(),
  /** Default timeout of the provision command. */
  provisionTimeoutMs: z
    .number()
    .int()
    .positive()
    .max(24 * 3600_000)
    .optional(),
  /** Admission control: runs beyond this many held leases wait in `waiting_for_capacity`, in arrival order. */
  maxConcurrentLeases: z.number().int().positive().max(10_000).optional(),
  /** A second ephemeral run on a leased execution workspace: `fail` with lease_conflict, or `wait` its turn. */
  singleFlight: z.enum(['fail', 'wait']).optional(),
};

export const LocalDriverConfig = z.object({ ...common }).strict();

const hostname = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9a-fA-F:]+\]$/, 'must be a hostname or IP address')
  .refine((h) => !h.startsWith('-'), 'must not start with "-"');

export const SshDriverConfig = z
  .object({
    ...common,
    host: hostname,
    port: z.number().int().min(1).max(65535).default(22),
    username: z
      .string()
      .regex(/^[a-z_][a-z0-9_.-]*$/i, 'must be a plain user name')
      .max(64),
    remoteWorkspacePath: AbsolutePath,
    privateKeySecretRef: SecretRef,
    knownHosts: z.string().max(65536).optional(),
    strictHostKeyChecking: z.boolean().default(true),
  })
  .strict();

const faultSpec = z
  .object({
    fail: z.union([z.literal('always'), z.number().int().positive()]),
    message: z.string().max(500).optional(),
    /** `after`: the operation takes effect, then reports failure (a timed-out create, a worker that died). */
    when: z.enum(['before', 'after']).default('before'),
  })
  .strict();
export type FaultSpec = z.infer<typeof faultSpec>;
export const FAULT_OPERATIONS = ['acquire', 'realize', 'execute', 'release', 'target'] as const;
export type FaultOperation = (typeof FAULT_OPERATIONS)[number];
export const FaultsConfig = z.partialRecord(z.enum(FAULT_OPERATIONS), faultSpec);

export const SandboxDriverConfig = z
  .object({
    ...common,
    provider: ProviderKey,
    image: z.string().max(500).optional(),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .max(24 * 3600_000)
      .optional(),
    reuseLease: z.boolean().default(false),
    /** Sandboxes kept ready for runs whose request matches the base (contracts/pool.ts). */
    warmPool: WarmPoolSchema.optional(),
    /** What the sandbox may reach with `network: "allowlist"`, per phase, and headers injected (contracts/egress.ts). */
    egress: EgressConfig.optional(),
  })
  .catchall(z.unknown()); // provider keys; the provider validates them

export const PluginDriverConfig = z
  .object({
    ...common,
    pluginKey: ProviderKey,
    driverKey: ProviderKey,
    driverConfig: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

export const DRIVER_CONFIG_SCHEMAS = {
  local: LocalDriverConfig,
  ssh: SshDriverConfig,
  sandbox: SandboxDriverConfig,
  plugin: PluginDriverConfig,
} as const satisfies Record<Driver, z.ZodType>;

export type LocalDriverConfig = z.infer<typeof LocalDriverConfig>;
export type SshDriverConfig = z.infer<typeof SshDriverConfig>;

/** The ssh connection an adapter uses to reach a workspace at `remoteCwd` on an ssh environment's host. */
export function sshSpecOf(config: SshDriverConfig, remoteCwd: string): SshExecutionSpec {
  return {
    host: config.host,
    port: config.port,
    username: config.username,
    remoteWorkspacePath: config.remoteWorkspacePath,
    remoteCwd,
    strictHostKeyChecking: config.strictHostKeyChecking,
    knownHosts: config.knownHosts ?? null,
    privateKeySecretRef: config.privateKeySecretRef,
  };
}
export type SandboxDriverConfig = z.infer<typeof SandboxDriverConfig>;
export type PluginDriverConfig = z.infer<typeof PluginDriverConfig>;

export { DriverSchema };
