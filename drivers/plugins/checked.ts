// Every reply of a plugin is parsed at the edge, as providers' are (drivers/providers/checked.ts): a plugin
// that answers off-contract fails the step with a message naming the plugin and the operation.
import { z } from 'zod';
import { SshExecutionSpecSchema, describeZodError } from '../../contracts/index.js';
import { NonRetryableError } from '../../contracts/errors.js';
import type { EnvRunPlugin, PluginLease, PluginProbeResult, PluginRealized, PluginTarget } from './types.js';

const Metadata = z.record(z.string(), z.unknown());

export const PluginLeaseSchema = z.object({
  providerLeaseId: z.string().min(1).max(1000),
  metadata: Metadata.optional(),
  expiresAt: z.iso.datetime({ offset: true }).nullish(),
});
export const PluginRealizedSchema = z.object({
  cwd: z.string().min(1),
  metadata: Metadata.optional(),
  bootstrap: z
    .object({
      command: z.string().nullable(),
      exitCode: z.number().int().nullable(),
      durationMs: z.number().nonnegative().nullable(),
    })
    .optional(),
  summary: z.string().max(2000).optional(),
});
export const PluginProbeSchema = z.object({ ok: z.boolean(), diagnostics: z.array(z.string()) });
export const PluginTargetSchema = z
  .union([
    z.object({ kind: z.literal('local'), cwd: z.string().min(1) }).strict(),
    z
      .object({
        kind: z.literal('remote'),
        transport: z.literal('ssh'),
        remoteCwd: z.string().min(1),
        spec: SshExecutionSpecSchema,
      })
      .strict(),
  ])
  .nullable();
export const PluginConfigSchema = Metadata;

export class PluginReplyError extends NonRetryableError {
  override name = 'PluginReplyError';
  override readonly code = 'invalid_plugin_reply';
}

function checked<T>(key: string, op: string, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new PluginReplyError(
      `plugin "${key}" returned an invalid reply to ${op}: ${describeZodError(r.error, 'reply')}`,
    );
  }
  return r.data;
}

/** A module cannot import NonRetryableError: an Error with `nonRetryable: true` is one. */
function rethrown(err: unknown): never {
  if (
    err instanceof Error &&
    !(err instanceof NonRetryableError) &&
    (err as { nonRetryable?: unknown }).nonRetryable === true
  ) {
    throw new NonRetryableError(err.message, { cause: err });
  }
  throw err;
}

async function call<T>(key: string, op: string, schema: z.ZodType<T>, reply: () => Promise<unknown>): Promise<T> {
  let value: unknown;
  try {
    value = await reply();
  } catch (err) {
    rethrown(err);
  }
  return checked(key, op, schema, value);
}

/** The plugin with every reply checked; its optional operations stay absent when it lacks them. */
export function checkedPlugin(p: EnvRunPlugin): EnvRunPlugin {
  const k = p.key;
  const checkedOne: EnvRunPlugin = {
    key: p.key,
    acquire: (ctx): Promise<PluginLease> => call(k, 'acquire', PluginLeaseSchema, () => p.acquire(ctx)),
    release: async (ctx) => {
      try {
        await p.release(ctx);
      } catch (err) {
        rethrown(err);
      }
    },
  };
  if (p.validateConfig) {
    const validate = p.validateConfig.bind(p);
    checkedOne.validateConfig = (input) => checked(k, 'validateConfig', PluginConfigSchema, validate(input));
  }
  if (p.probe) {
    const probe = p.probe.bind(p);
    checkedOne.probe = (ctx): Promise<PluginProbeResult> => call(k, 'probe', PluginProbeSchema, () => probe(ctx));
  }
  if (p.realizes) {
    const realizes = p.realizes.bind(p);
    checkedOne.realizes = (input) => realizes(input) === true;
  }
  if (p.realize) {
    const realize = p.realize.bind(p);
    checkedOne.realize = (ctx): Promise<PluginRealized> => call(k, 'realize', PluginRealizedSchema, () => realize(ctx));
  }
  if (p.resolveTarget) {
    const resolveTarget = p.resolveTarget.bind(p);
    checkedOne.resolveTarget = (ctx): Promise<PluginTarget> =>
      call(k, 'resolveTarget', PluginTargetSchema, () => resolveTarget(ctx));
  }
  return checkedOne;
}
