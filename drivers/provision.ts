import type { ExecResult } from '../contracts/index.js';
import type { ProviderExecRequest } from './providers/contract.js';
import { firstLine } from './process.js';

/** A provision command that failed: the exit code and the first line of stderr (what ops need first). */
export function provisionFailure(result: ExecResult, timeoutMs: number): Error {
  if (result.timedOut) return new Error(`provision command timed out after ${timeoutMs} ms`);
  const detail = firstLine(result.stderr) || firstLine(result.stdout) || 'no output';
  const how =
    result.exitCode === null ? `was killed by ${result.signal ?? 'a signal'}` : `exited with code ${result.exitCode}`;
  return new Error(`provision command ${how}: ${detail}`);
}

export interface ProvisionOutcome {
  command: string | null;
  exitCode: number | null;
  durationMs: number | null;
}

/**
 * Runs the provision command (a shell command by definition: the shell is the point) through the
 * driver's own executor, with only an explicit environment. Throws on a non-zero exit or a timeout.
 */
export async function provision(
  command: string | null,
  timeoutMs: number,
  cwd: string,
  execute: (request: ProviderExecRequest) => Promise<ExecResult>,
): Promise<ProvisionOutcome> {
  if (!command) return { command: null, exitCode: null, durationMs: null };
  const started = Date.now();
  const result = await execute({ command: '/bin/sh', args: ['-c', command], cwd, env: {}, timeoutMs });
  if (result.timedOut || result.exitCode !== 0) throw provisionFailure(result, timeoutMs);
  return { command, exitCode: result.exitCode, durationMs: Date.now() - started };
}
