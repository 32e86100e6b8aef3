// Warm pools: an environment may keep sandboxes acquired, realized from a base and provisioned, so a run
// that asks for that base takes one instead of waiting for its provision command. Pure (the config's
// schema; the workflows import pool-messages.ts, which has no zod).
import { z } from 'zod';
import { AbsolutePath } from './common.js';
import { durationMs } from './duration.js';

/** A lockfile (or any file) of the base, relative to its folder, whose content the fingerprint covers. */
const FingerprintFile = z
  .string()
  .min(1)
  .max(500)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..') && !p.includes('\0'), {
    message: 'must be a path relative to base.cwd, without ".."',
  });

/** A duration such as '30m' or a number of milliseconds. */
const Duration = z.union([
  z
    .number()
    .int()
    .min(1000)
    .max(30 * 24 * 3600_000),
  z
    .string()
    .refine((t) => (durationMs(t) ?? 0) >= 1000, 'must be a duration of at least 1s, like 30m')
    .transform((t) => durationMs(t)!),
]);

export const WarmPoolBaseSchema = z
  .object({
    /** The host folder pooled sandboxes are realized from (inside the company's workspace roots). */
    cwd: AbsolutePath,
    /** Runs of this execution workspace take from the pool (else runs whose repository and ref, or folder, match). */
    executionWorkspaceId: z.uuid().optional(),
    repoUrl: z.string().min(1).max(2000).optional(),
    repoRef: z.string().min(1).max(200).optional(),
    /** Run in each pooled sandbox once it is realized; a run with another provision command does not match. */
    provisionCommand: z.string().min(1).max(10_000).nullable().default(null),
    /** Files whose content decides whether a pooled sandbox's provisioning still holds for a run (lockfiles). */
    fingerprintFiles: z.array(FingerprintFile).max(32).default([]),
  })
  .strict()
  .refine((b) => !b.repoRef || b.repoUrl, { message: 'repoRef needs repoUrl', path: ['repoRef'] });

export const WarmPoolSchema = z
  .object({
    /** How many ready sandboxes the pool keeps. */
    size: z.number().int().min(1).max(64),
    /** A pooled sandbox not taken within this long is retired and replaced (default 1h). */
    maxIdle: Duration.default(3600_000),
    base: WarmPoolBaseSchema,
  })
  .strict();
export type WarmPool = z.infer<typeof WarmPoolSchema>;
export type WarmPoolBase = z.infer<typeof WarmPoolBaseSchema>;

export * from './pool-messages.js';
