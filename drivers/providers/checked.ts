// Every reply of a provider is parsed at the edge: a provider that answers off-contract fails the step
// with a message naming the provider and the operation, never with a confusing error three steps later.
import { z } from 'zod';
import { ExecResultSchema, describeZodError } from '../../contracts/index.js';
import { NonRetryableError } from '../../contracts/errors.js';
import type { LeaseCallContext, ProviderReleaseReport, SandboxProvider } from './contract.js';

const Metadata = z.record(z.string(), z.unknown());
const ProviderLeaseSchema = z.object({
  providerLeaseId: z.string().min(1).max(1000),
  metadata: Metadata,
  expiresAt: z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), 'must be a date (ISO 8601)')
    .nullable(),
});
const RealizedSchema = z.object({
  // Where the sandbox's workspace is: the driver compares it with the control plane's own folder.
  cwd: z.string().min(1).startsWith('/', 'must be an absolute path'),
  metadata: Metadata,
});
const ProbeSchema = z.object({
  ok: z.boolean(),
  summary: z.string().max(2000).optional(),
  diagnostics: z.array(
    z.object({
      severity: z.enum(['info', 'warning', 'error']),
      message: z.string().max(10_000),
      code: z.string().max(200).optional(),
    }),
  ),
});
const ValidatedSchema = z.object({ config: Metadata, warnings: z.array(z.string().max(2000)) });
const TargetSchema = z.object({ remoteCwd: z.string().min(1) });
const ReceiptSchema = z
  .object({ providerLeaseId: z.string().min(1).max(1000), state: z.enum(['stopped', 'destroyed']) })
  .strict();
const ReleaseSchema = z.object({ syncBack: Metadata.optional(), receipt: ReceiptSchema.optional() }).strict();

export class ProviderReplyError extends NonRetryableError {
  override name = 'ProviderReplyError';
  override readonly code = 'invalid_provider_reply';
}

/** The reply parsed by `schema`, or a ProviderReplyError naming the provider, the operation and the field. */
export function checkedReply<T>(key: string, op: string, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success)
    throw new ProviderReplyError(
      `sandbox provider "${key}" returned an invalid reply to ${op}: ${describeZodError(r.error, 'reply')}`,
    );
  return r.data;
}

/** A release or destroy report: a receipt is only ever for the lease the call was about. */
function checkedReport(key: string, op: string, ctx: LeaseCallContext, value: unknown): ProviderReleaseReport {
  const report = checkedReply(key, op, ReleaseSchema, value);
  if (report.receipt && report.receipt.providerLeaseId !== ctx.lease.providerLeaseId)
    throw new ProviderReplyError(
      `sandbox provider "${key}" returned an invalid reply to ${op}: reply.receipt.providerLeaseId: is ${JSON.stringify(report.receipt.providerLeaseId)}, not the lease's ${JSON.stringify(ctx.lease.providerLeaseId)}`,
    );
  return report;
}

/** A version 2 provider whose every reply is checked. */
export function checkedProvider<C>(p: SandboxProvider<C>): SandboxProvider<C> {
  const k = p.key;
  return {
    contractVersion: 2,
    key: p.key,
    ...(p.hostBound ? { hostBound: true } : {}),
    ...(p.egressAllowlist ? { egressAllowlist: true } : {}),
    // A refusal (naming the field) is the provider's own error; only what it returns is checked here.
    validateConfig: async (config) =>
      checkedReply(k, 'validateConfig', ValidatedSchema, await p.validateConfig(config)) as {
        config: C;
        warnings: string[];
      },
    probe: async (config, ctx) => checkedReply(k, 'probe', ProbeSchema, await p.probe(config, ctx)),
    acquireLease: async (config, ctx) =>
      checkedReply(k, 'acquireLease', ProviderLeaseSchema, await p.acquireLease(config, ctx)),
    resumeLease: async (config, ctx) => {
      const resumed = checkedReply(k, 'resumeLease', ProviderLeaseSchema.nullable(), await p.resumeLease(config, ctx));
      if (resumed && resumed.providerLeaseId !== ctx.lease.providerLeaseId)
        throw new ProviderReplyError(
          `sandbox provider "${k}" returned an invalid reply to resumeLease: reply.providerLeaseId: is ${JSON.stringify(resumed.providerLeaseId)}, not the lease's ${JSON.stringify(ctx.lease.providerLeaseId)}`,
        );
      return resumed;
    },
    releaseLease: async (config, ctx) => checkedReport(k, 'releaseLease', ctx, await p.releaseLease(config, ctx)),
    destroyLease: async (config, ctx) => checkedReport(k, 'destroyLease', ctx, await p.destroyLease(config, ctx)),
    realizeWorkspace: async (config, ctx) =>
      checkedReply(k, 'realizeWorkspace', RealizedSchema, await p.realizeWorkspace(config, ctx)),
    execute: async (config, ctx, request) =>
      checkedReply(k, 'execute', ExecResultSchema, await p.execute(config, ctx, request)),
    ...(p.resolveTarget
      ? {
          resolveTarget: async (config: C, ctx: Parameters<NonNullable<SandboxProvider<C>['resolveTarget']>>[1]) =>
            checkedReply(k, 'resolveTarget', TargetSchema, await p.resolveTarget!(config, ctx)),
        }
      : {}),
  };
}
