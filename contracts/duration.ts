// Durations as Temporal reads them: '500ms', '30s', '5m', '1h', '2d' (the `ms` package's grammar, which
// Temporal's own options take). Parsing with Temporal's function means a value envrun accepts is one Temporal
// accepts too, and every duration envrun reads (CLI options, environment variables) has the same grammar.
import type { Duration } from '@temporalio/common';
import { msToNumber } from '@temporalio/common/lib/time.js';
import { z } from 'zod';

/**
 * The milliseconds of a duration string, or null when it is not one, or not positive, or past what a number
 * holds exactly (nothing downstream, a date or a Temporal interval, can take it). A unit is required:
 * `ms` reads a bare '5' as 5 milliseconds, which is rarely what someone typing 5 means. One token, no spaces.
 */
export function durationMs(text: string): number | null {
  if (/\s/.test(text) || !/[a-z]$/i.test(text)) return null;
  let value: number;
  try {
    value = msToNumber(text as Duration);
  } catch {
    return null;
  }
  return value > 0 && value <= Number.MAX_SAFE_INTEGER ? value : null;
}

/** A positive duration string, kept as typed (Temporal takes it as is); `message` says what is expected. */
export const durationString = (message = 'must be a duration like 5m') =>
  z.string().refine((text) => durationMs(text) !== null, message);
