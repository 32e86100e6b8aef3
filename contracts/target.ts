import { z } from 'zod';
import { CommandIdSchema } from './commands.js';

/** The most of each stream an exec answer carries, and its default. */
export const MAX_TAIL_BYTES = 64 * 1024;
export const DEFAULT_TAIL_BYTES = 4096;

export const SshExecutionSpecSchema = z.object({
  host: z.string(),
  port: z.number().int(),
  username: z.string(),
  remoteWorkspacePath: z.string(),
  remoteCwd: z.string(),
  strictHostKeyChecking: z.boolean(),
  knownHosts: z.string().nullable(),
  /** A reference only: the adapter resolves it where it runs. */
  privateKeySecretRef: z.string(),
});
export type SshExecutionSpec = z.infer<typeof SshExecutionSpecSchema>;

export const LocalTargetSchema = z.object({
  kind: z.literal('local'),
  environmentId: z.string(),
  leaseId: z.string(),
  cwd: z.string(),
});

export const SshTargetSchema = z.object({
  kind: z.literal('remote'),
  transport: z.literal('ssh'),
  environmentId: z.string(),
  leaseId: z.string(),
  remoteCwd: z.string(),
  spec: SshExecutionSpecSchema,
});

export const SandboxTargetSchema = z.object({
  kind: z.literal('remote'),
  transport: z.literal('sandbox'),
  environmentId: z.string(),
  leaseId: z.string(),
  providerKey: z.string(),
  providerLeaseId: z.string(),
  remoteCwd: z.string(),
  timeoutMs: z.number().int().nullable(),
});

export const ExecutionTargetSchema = z.union([LocalTargetSchema, SshTargetSchema, SandboxTargetSchema]).nullable();
export type ExecutionTarget = z.infer<typeof ExecutionTargetSchema>;

/** What adapters get for remote execution: the SSH spec only, null otherwise. */
export const RemoteExecutionSpecSchema = SshExecutionSpecSchema.nullable();
export type RemoteExecutionSpec = z.infer<typeof RemoteExecutionSpecSchema>;

export const ExecRequestSchema = z
  .object({
    command: z.string().min(1),
    args: z.array(z.string()).default([]),
    cwd: z.string().optional(),
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name'), z.string())
      .default({}),
    /** Small input, given whole: it is in the run's history. Large or live input: `stdinStream`. */
    stdin: z.string().optional(),
    /** Keep the command's stdin open: written through the store (`EnvRunAdmin.openStdin`, `run exec --stdin`). */
    stdinStream: z.boolean().default(false),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .max(24 * 3600_000)
      .default(10 * 60_000),
    /** The command's id; the same id started twice is one command. A UUID when absent. */
    commandId: CommandIdSchema.optional(),
    /** false: answer once the command is started (status `running`); true: when it ends. */
    wait: z.boolean().default(true),
    /** How much of the end of each stream the answer carries (it goes through the run's history). */
    tailBytes: z.number().int().min(0).max(MAX_TAIL_BYTES).default(DEFAULT_TAIL_BYTES),
  })
  .refine((r) => !(r.stdin !== undefined && r.stdinStream), {
    message: 'stdin and stdinStream: give one of them',
    path: ['stdinStream'],
  });
export type ExecRequest = z.input<typeof ExecRequestSchema>;

export const ExecResultSchema = z.object({
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  timedOut: z.boolean(),
  stdout: z.string(),
  stderr: z.string(),
});
export type ExecResult = z.infer<typeof ExecResultSchema>;
