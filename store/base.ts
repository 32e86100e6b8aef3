// What the query files share: the base their query classes extend, dates as records hold them, and the
// unique-violation check.
import type { Db } from './db.js';

/**
 * What every query class builds on: the database. A mixin's base takes `any[]` (TypeScript's rule for mixin
 * classes); Store's own constructor gives the real signature.
 */
export type QueryBase = new (...args: any[]) => { readonly db: Db };

export const iso = (d: Date) => d.toISOString();
export const isoOrNull = (d: Date | null) => (d ? d.toISOString() : null);

/** Postgres unique_violation, with the constraint that raised it. */
export function uniqueViolation(err: unknown): string | null {
  const e = err as { code?: string; constraint?: string; cause?: { code?: string; constraint?: string } };
  const pgErr = e?.code ? e : e?.cause;
  return pgErr?.code === '23505' ? (pgErr.constraint ?? 'unique') : null;
}
