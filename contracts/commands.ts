// A command in a run's target: what history, queries and the store say about it. Its output is never here:
// output lives in the command journal (the store's `command_output`), read by streaming; a command's outcome
// carries at most a small tail of it.
import { z } from 'zod';
import { COMMAND_ID_PATTERN, COMMAND_ID_RULE } from './constants.js';

/**
 * - `running`: started, not ended (yet: a worker that died with it makes it `lost`);
 * - `exited`: ended on its own, with an exit code; `killed`: ended after a kill request (with whatever exit it
 *   made), or by a signal;
 * - `timed_out`: ended by its `timeoutMs`; `killed_by_release`: ended because the run released its lease;
 * - `lost`: the worker running it died: its end is unknown; it is never run again;
 * - `failed`: never ran (the target was gone, the request could not be honoured).
 */
export const COMMAND_STATUSES = [
  'running',
  'exited',
  'killed',
  'timed_out',
  'killed_by_release',
  'lost',
  'failed',
] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

/** A command id: the caller's (starting the same id twice is one command) or a UUID. */
export const CommandIdSchema = z.string().regex(COMMAND_ID_PATTERN, COMMAND_ID_RULE);

export const CommandSummarySchema = z.object({
  commandId: z.string(),
  status: z.enum(COMMAND_STATUSES),
  exitCode: z.number().int().nullable(),
  signal: z.string().nullable(),
  timedOut: z.boolean(),
  startedAt: z.string().nullable(),
  endedAt: z.string().nullable(),
  durationMs: z.number().nullable(),
  /** Bytes the command wrote, per stream (all of them, also those past the journal's limit). */
  stdoutBytes: z.number().int(),
  stderrBytes: z.number().int(),
  /** The journal stopped keeping output at its limit (a `truncated` marker is in the stream). */
  truncated: z.boolean(),
  /** Why it failed or was lost (never output). */
  error: z.string().nullable(),
});
export type CommandSummary = z.infer<typeof CommandSummarySchema>;

/**
 * What `exec` answers: the summary, and the last `tailBytes` of each stream as UTF-8 text (`outputLossy`:
 * some bytes were not UTF-8 and were replaced). The whole output is in the journal.
 */
export const CommandOutcomeSchema = CommandSummarySchema.extend({
  stdout: z.string(),
  stderr: z.string(),
  outputLossy: z.boolean(),
});
export type CommandOutcome = z.infer<typeof CommandOutcomeSchema>;

/** One event of a command's stream, as `run logs --json` prints it and `streamCommand` yields it. */
export type CommandEvent =
  | { type: 'output'; seq: number; stream: 'stdout' | 'stderr'; data: Buffer }
  | { type: 'truncated'; seq: number }
  | { type: 'end'; summary: CommandSummary };
