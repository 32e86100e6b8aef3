// The command runner a sandbox target carries: a control plane's adapter runs its commands in the run's sandbox
// through the run (EnvRunClient.exec, on the worker that holds it).
import type { ExecResult } from '../../contracts/index.js';
import type { EnvRunClient } from '../runs.js';

/**
 * Runs a command in the run's sandbox through the run (EnvRunClient.exec, on the worker that holds it): how
 * a control plane's adapter reaches a sandbox target. The output comes whole at the end (`onLog` is not
 * called) and is capped as exec caps it; session hints are ignored.
 */
export interface SandboxCommandRunner {
  execute(input: {
    command: string;
    args?: string[];
    cwd?: string;
    env?: Record<string, string>;
    stdin?: string;
    timeoutMs?: number;
    onLog?: unknown;
    onSpawn?: unknown;
    useSession?: boolean;
    bypassSession?: boolean;
  }): Promise<ExecResult & { pid: null; startedAt: string; finishedAt: string; durationMs: number }>;
}

/** A sandbox command without a timeout of its own gets the sandbox's, else this (Paperclip's adapter default). */
const RUNNER_TIMEOUT_MS = 4 * 3600_000;

/** The runner of run `heartbeatRunId`; `timeoutMs` is the sandbox's own command timeout, if it has one. */
export function sandboxRunner(
  runs: Pick<EnvRunClient, 'exec'>,
  companyId: string,
  heartbeatRunId: string,
  timeoutMs: number | null,
): SandboxCommandRunner {
  return {
    async execute(input) {
      const started = new Date();
      const result = await runs.exec(companyId, heartbeatRunId, {
        command: input.command,
        args: input.args ?? [],
        ...(input.cwd === undefined ? {} : { cwd: input.cwd }),
        env: input.env ?? {},
        ...(input.stdin === undefined ? {} : { stdin: input.stdin }),
        timeoutMs: input.timeoutMs ?? timeoutMs ?? RUNNER_TIMEOUT_MS,
      });
      const finished = new Date();
      return {
        ...result,
        pid: null,
        startedAt: started.toISOString(),
        finishedAt: finished.toISOString(),
        durationMs: finished.getTime() - started.getTime(),
      };
    },
  };
}
