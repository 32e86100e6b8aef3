// The command runner a sandbox target carries: a control plane's adapter runs its commands in the run's sandbox
// through the run (EnvRunClient.exec, on the worker that holds it).
import { randomUUID } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import { MAX_TAIL_BYTES, type ExecResult } from '../../contracts/index.js';
import { TailBuffer } from '../../drivers/process.js';
import type { Store } from '../../store/store.js';
import { RunStateError } from '../errors.js';
import type { EnvRunClient } from '../runs.js';

/**
 * Runs a command in the run's sandbox through the run (EnvRunClient.exec, on the worker that holds it): how
 * a control plane's adapter reaches a sandbox target. Its output streams to `onLog` from the command's
 * journal; session hints are ignored; `onSpawn` is not called (the process is on the worker's host).
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
/** The most of each stream the runner's answer keeps (its end); the journal keeps the whole output. */
const RUNNER_KEEP_BYTES = 8 * 1024 * 1024;

/**
 * The runner of run `heartbeatRunId`; `timeoutMs` is the sandbox's own command timeout, if it has one. With
 * the store (`journal`), each command is started detached and followed through its journal: `onLog` gets
 * its output as it is written, and the answer carries the last 8 MiB of each stream. Without it, the
 * answer carries the command's tail as exec returns it (64 KiB a stream) and `onLog` is not called.
 */
export function sandboxRunner(
  runs: Pick<EnvRunClient, 'exec'>,
  companyId: string,
  heartbeatRunId: string,
  timeoutMs: number | null,
  journal?: () => Promise<Store>,
): SandboxCommandRunner {
  return {
    async execute(input) {
      const started = new Date();
      const request = {
        command: input.command,
        args: input.args ?? [],
        ...(input.cwd === undefined ? {} : { cwd: input.cwd }),
        env: input.env ?? {},
        ...(input.stdin === undefined ? {} : { stdin: input.stdin }),
        timeoutMs: input.timeoutMs ?? timeoutMs ?? RUNNER_TIMEOUT_MS,
      };
      let result: ExecResult;
      if (journal) {
        const store = await journal();
        const commandId = randomUUID();
        await runs.exec(companyId, heartbeatRunId, { ...request, commandId, wait: false });
        result = await follow(store, companyId, heartbeatRunId, commandId, input.onLog as OnLog | undefined);
      } else {
        result = await runs.exec(companyId, heartbeatRunId, { ...request, tailBytes: MAX_TAIL_BYTES });
      }
      const finished = new Date();
      return {
        exitCode: result.exitCode,
        signal: result.signal,
        timedOut: result.timedOut,
        stdout: result.stdout,
        stderr: result.stderr,
        pid: null,
        startedAt: started.toISOString(),
        finishedAt: finished.toISOString(),
        durationMs: finished.getTime() - started.getTime(),
      };
    },
  };
}

type OnLog = (stream: 'stdout' | 'stderr', chunk: string) => Promise<void>;

/** Follows a command's journal to its end: `onLog` per chunk (whole UTF-8 characters), the last bytes kept. */
async function follow(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string,
  onLog: OnLog | undefined,
): Promise<ExecResult> {
  const kept = { stdout: new TailBuffer(RUNNER_KEEP_BYTES), stderr: new TailBuffer(RUNNER_KEEP_BYTES) };
  const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  const { streamCommand } = await import('../commands.js'); // the store's side: loaded when first used
  for await (const event of streamCommand(store, companyId, heartbeatRunId, commandId)) {
    if (event.type === 'output') {
      kept[event.stream].push(event.data);
      const text = decoders[event.stream].write(event.data);
      if (onLog && text) await onLog(event.stream, text);
    } else if (event.type === 'end') {
      const { summary } = event;
      if (summary.status === 'lost' || summary.status === 'failed' || summary.status === 'killed_by_release') {
        throw new RunStateError(
          `command ${commandId} ${summary.status.replaceAll('_', ' ')}: ${summary.error ?? ''}`.trim(),
        );
      }
      return {
        exitCode: summary.exitCode,
        signal: summary.signal,
        timedOut: summary.timedOut,
        stdout: kept.stdout.toString(),
        stderr: kept.stderr.toString(),
      };
    }
  }
  throw new RunStateError(`command ${commandId}: its journal ended without its end`);
}
