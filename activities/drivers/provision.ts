import type { ExecResult } from '../../contracts/index.js';
import { firstLine } from '../process.js';

/** A provision command that failed: the exit code and the first line of stderr (what ops need first). */
export function provisionFailure(result: ExecResult, timeoutMs: number): Error {
  if (result.timedOut) return new Error(`provision command timed out after ${timeoutMs} ms`);
  const detail = firstLine(result.stderr) || firstLine(result.stdout) || 'no output';
  const how = result.exitCode === null ? `was killed by ${result.signal ?? 'a signal'}` : `exited with code ${result.exitCode}`;
  return new Error(`provision command ${how}: ${detail}`);
}
