// How the CLI reports a command's error: an exit code, and a stable code and message (with --json, as JSON on
// stdout; otherwise a line on stderr).
import { ConfigError } from '../config.js';
import { EnvRunError, InvalidInputError, RunEndedError, RunFailedError } from '../errors.js';
import { EXIT_FAILURE, EXIT_USAGE } from './output.js';

/** Prints the error and returns the exit code. */
export function reportError(err: unknown, asJson: boolean): number {
  const { exitCode, code, message } = classify(err);
  if (asJson) console.log(JSON.stringify({ error: { code, message, ...details(err) }, exitCode }, null, 2));
  console.error(`envrun: ${err instanceof RunFailedError ? `${code}: ` : ''}${message}`);
  return exitCode;
}

function classify(err: unknown): { exitCode: number; code: string; message: string } {
  const message = err instanceof Error ? err.message : String(err);
  // Bad input or configuration: nothing was started or written.
  if (err instanceof InvalidInputError || err instanceof ConfigError)
    return { exitCode: EXIT_USAGE, code: err.code, message };
  if (err instanceof EnvRunError) return { exitCode: EXIT_FAILURE, code: err.code, message };
  return { exitCode: EXIT_FAILURE, code: 'error', message };
}

function details(err: unknown): Record<string, unknown> {
  if (err instanceof RunFailedError) {
    return { environmentId: err.environmentId, driver: err.driver, provider: err.provider };
  }
  if (err instanceof RunEndedError) return { outcome: err.outcome, detail: err.detail };
  return {};
}
