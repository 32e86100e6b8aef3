// Every reply of a provider is parsed at the edge: a provider that answers off-contract fails the step
// with a message naming the provider and the operation, never with a confusing error three steps later.
import { z } from 'zod';
import { ExecResultSchema, describeZodError } from '../../contracts/index.js';
import { NonRetryableError } from '../../contracts/errors.js';
import type { SandboxProvider } from './contract.js';

const ProviderLeaseSchema = z.object({
  providerLeaseId: z.string().min(1).max(1000),
  metadata: z.record(z.string(), z.unknown()),
  expiresAt: z.string().nullable(),
});
const RealizedSchema = z.object({ cwd: z.string().min(1), metadata: z.record(z.string(), z.unknown()) });
const ProbeSchema = z.object({ ok: z.boolean(), diagnostics: z.array(z.string()) });
const TargetSchema = z.object({ remoteCwd: z.string().min(1) });
const ReleaseSchema = z
  .object({ syncBack: z.record(z.string(), z.unknown()).optional() })
  .strict()
  .optional();

export class ProviderReplyError extends NonRetryableError {
  override name = 'ProviderReplyError';
  override readonly code = 'invalid_provider_reply';
}

function checked<T>(key: string, op: string, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success)
    throw new ProviderReplyError(
      `sandbox provider "${key}" returned an invalid reply to ${op}: ${describeZodError(r.error, 'reply')}`,
    );
  return r.data;
}

export function checkedProvider<C>(p: SandboxProvider<C>): SandboxProvider<C> {
  const k = p.key;
  return {
    key: p.key,
    ...(p.hostBound ? { hostBound: true } : {}),
    validateConfig: (config) => p.validateConfig(config),
    probe: async (config) => checked(k, 'probe', ProbeSchema, await p.probe(config)),
    acquireLease: async (config, ctx) =>
      checked(k, 'acquireLease', ProviderLeaseSchema, await p.acquireLease(config, ctx)),
    resumeLease: async (config, ctx) =>
      checked(k, 'resumeLease', ProviderLeaseSchema.nullable(), await p.resumeLease(config, ctx)),
    releaseLease: async (config, ctx) =>
      checked(k, 'releaseLease', ReleaseSchema, (await p.releaseLease(config, ctx)) ?? undefined),
    destroyLease: (config, ctx) => p.destroyLease(config, ctx),
    realizeWorkspace: async (config, ctx) =>
      checked(k, 'realizeWorkspace', RealizedSchema, await p.realizeWorkspace(config, ctx)),
    execute: async (config, ctx, request) =>
      checked(k, 'execute', ExecResultSchema, await p.execute(config, ctx, request)),
    ...(p.resolveTarget
      ? {
          resolveTarget: async (config: C, ctx: Parameters<NonNullable<SandboxProvider<C>['resolveTarget']>>[1]) =>
            checked(k, 'resolveTarget', TargetSchema, await p.resolveTarget!(config, ctx)),
        }
      : {}),
  };
}
