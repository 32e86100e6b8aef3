// How the CLI answers: a command prints one value, as JSON with --json or as text otherwise, and exits
// with one of these codes.

/** The command ran but failed (a run error, not found, a refused state, a failed probe). */
export const EXIT_FAILURE = 1;
/** Bad input or configuration: nothing was started or written. */
export const EXIT_USAGE = 2;

export interface Output {
  json?: boolean | undefined;
}

export function print(opts: Output, value: unknown, human: () => string): void {
  console.log(opts.json ? JSON.stringify(value, null, 2) : human());
}

/** A line about what is happening, on stderr (stdout carries the command's value); timed on a terminal. */
export function progress(line: string): void {
  const stamp = process.stderr.isTTY ? `${new Date().toISOString().slice(11, 19)} ` : '';
  process.stderr.write(`envrun: ${stamp}${line}\n`);
}
