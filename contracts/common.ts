import { z } from 'zod';
import {
  CLEANUP_STATUSES,
  DRIVERS,
  ENVIRONMENT_STATUSES,
  ERROR_CODES,
  LEASE_POLICIES,
  LEASE_STATUSES,
} from './constants.js';

/** Ids chosen by the control plane: safe in workflow ids, paths and search attributes. */
export const ExternalId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'must start with a letter or digit and use only letters, digits, . _ : -');

export const Uuid = z.uuid();

const DISPLAY_NAME = 'must be a non-empty string of at most 200 characters';
/** A display name (environment, execution workspace): trimmed, then non-empty and at most 200 characters. */
export const DisplayName = z.string({ error: DISPLAY_NAME }).trim().min(1, DISPLAY_NAME).max(200, DISPLAY_NAME);

export const Timestamp = z.string(); // ISO-8601, produced by the store
export const JsonObject = z.record(z.string(), z.unknown());

export const DriverSchema = z.enum(DRIVERS);
export const EnvironmentStatusSchema = z.enum(ENVIRONMENT_STATUSES);
export const LeaseStatusSchema = z.enum(LEASE_STATUSES);
export const LeasePolicySchema = z.enum(LEASE_POLICIES);
export const CleanupStatusSchema = z.enum(CLEANUP_STATUSES);
export const ErrorCodeSchema = z.enum(ERROR_CODES);

/** An absolute path with no `..` segment (a path that walks up is refused, not normalised). */
export const AbsolutePath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine((p) => !p.split('/').includes('..'), 'must not contain ".." segments')
  .refine((p) => !p.includes('\0'), 'must not contain NUL');

/** Every run failure carries these fields (docs/design.md, error codes). */
export const RunFailureSchema = z.object({
  code: ErrorCodeSchema,
  message: z.string(),
  environmentId: z.string().nullable(),
  driver: DriverSchema.nullable(),
  provider: z.string().nullable(),
});
export type RunFailure = z.infer<typeof RunFailureSchema>;

/** Render a zod error as "field.path: message; …" so bad input names the field. */
export function describeZodError(error: z.ZodError, prefix = ''): string {
  return error.issues
    .map((issue) => {
      const path = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
      return `${path || '(input)'}: ${issue.message}`;
    })
    .join('; ');
}

/** A reference to a secret resolved on the worker at run time; the secret itself is never stored. */
export const SecretRef = z
  .string()
  .regex(/^(env:[A-Za-z_][A-Za-z0-9_]*|file:\/.+)$/, 'must be "env:NAME" or "file:/absolute/path"');
