// The `envrun` binary as a user runs it, pointed at a harness's server, task queue, database and data folder.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import type { Harness } from './harness.js';

export const BIN = fileURLToPath(new URL('../../bin/envrun.mjs', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI's environment against the harness: its dev server, database, task queue and data folder. */
export function cliEnv(h: Harness, extraEnv: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: h.database.url,
    ENVRUN_TASK_QUEUE: h.taskQueue,
    ENVRUN_DATA_DIR: h.dataDir,
    ...extraEnv,
  };
}

export function runCli(h: Harness, args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      {
        env: cliEnv(h, extraEnv),
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
