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

/** Rows as aligned columns (the first row the heading); the last column is not padded. */
export function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

/** Text a sandbox chose (a host it asked for), safe on a terminal: control characters as \xNN. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
