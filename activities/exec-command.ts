import { Context } from '@temporalio/activity';
import {
  ExecRequestSchema,
  describeZodError,
  type CommandOutcome,
  type CommandStatus,
  type DriverRealization,
  type EnvironmentLease,
  type ExecResult,
} from '../contracts/index.js';
import { driverFor, failureContext, stepContext, type ActivityDeps } from './deps.js';
import { NO_CONTEXT, runFailure } from '../contracts/errors.js';
import { readSetting } from '../config/settings.js';
import { CommandWriter } from '../store/command-writer.js';
import { toCommandSummary, type CommandRow } from '../store/store.js';
import type { CommandControl } from '../drivers/providers/contract.js';

export interface ExecCommandInput {
  companyId: string;
  lease: EnvironmentLease;
  record: DriverRealization | null;
  request: unknown;
}

/**
 * Runs one command in a ready run's target, on the worker that holds its resource (the run's host queue
 * for host-bound leases), and journals it: the command's row in the store, its output in numbered chunks as
 * it is written (bounded per command and per company), its end. The answer carries the command's summary
 * and a small tail of its output, never the whole output (it would be in the run's history). Kill and stdin
 * requests reach it through the store's control channel. A command is not idempotent: the activity is never
 * retried, and a second delivery of the same command id finds its row and runs nothing. It heartbeats every
 * second, so a cancel (the run releasing its lease) reaches it within the worker's heartbeat throttle: the
 * driver kills the command, it is recorded `killed_by_release`, and the step ends cancelled.
 */
export function createExecCommand(deps: ActivityDeps) {
  return async function execCommand(input: ExecCommandInput): Promise<CommandOutcome> {
    const parsed = ExecRequestSchema.safeParse(input.request);
    if (!parsed.success) throw runFailure('invalid_request', describeZodError(parsed.error, 'exec'), NO_CONTEXT);
    const { commandId: givenId, wait: _wait, tailBytes, stdinStream, ...request } = parsed.data;
    // Read now: the environment as it is (its provider config may have changed since the run was ready).
    const environment = await deps.store.getEnvironment(input.companyId, input.lease.environmentId);
    if (!environment) {
      throw runFailure('environment_not_found', `environment ${input.lease.environmentId} not found`, NO_CONTEXT);
    }
    const driver = driverFor(deps, environment);
    const info = Context.current().info;
    // A run from before durable commands names none: the step's own id stands for it.
    const commandId = givenId ?? `step-${info.activityId}`;
    const opened = await deps.store.openCommand({
      companyId: input.companyId,
      heartbeatRunId: input.lease.heartbeatRunId ?? '',
      commandId,
      leaseId: input.lease.id,
      hostId: deps.hostId ?? null,
      command: request.command,
      args: request.args,
    });
    if (!opened.created) return settleRedelivered(deps, opened.row);
    const key = opened.row.key;

    const control = commandControl(deps, key, stdinStream);
    const step = stepContext();
    const signal = step.signal ? AbortSignal.any([step.signal, control.aborted]) : control.aborted;
    const beat = setInterval(() => step.beat(), 1000);
    let streamed = false;
    try {
      // The company's room for output, and a kill or stdin sent before the command starts: read together.
      const [used] = await Promise.all([deps.store.companyOutputBytes(input.companyId), control.ready]);
      const room = readSetting('ENVRUN_MAX_COMPANY_COMMAND_OUTPUT_BYTES') - used;
      const limit = Math.max(0, Math.min(readSetting('ENVRUN_MAX_COMMAND_OUTPUT_BYTES'), room));
      const writer = new CommandWriter(deps.store, key, limit, tailBytes);
      let result: ExecResult;
      try {
        // No progress lines: a heartbeat carries its details into history when a step times out, and a
        // command's output never goes there. The 1 s beat stays.
        result = await driver.execute(
          { ...step, progress: undefined, signal },
          { environment, lease: input.lease, record: input.record },
          {
            ...request,
            ...(stdinStream ? { stdinStream: control.stdin } : {}),
            onOutput: (stream, chunk) => {
              streamed = true;
              return writer.push(stream, chunk);
            },
            onStarted: control.started,
          },
        );
      } catch (err) {
        if (Context.current().cancellationSignal.aborted) {
          await end(deps, key, writer, 'killed_by_release', null, null, false, null);
          throw err;
        }
        await end(deps, key, writer, 'failed', null, null, false, (err as Error).message);
        throw runFailure('transport_resolution_failed', (err as Error).message, failureContext(deps, environment), {
          nonRetryable: true,
        });
      }
      // A provider that does not stream hands its output back whole: it is journaled now.
      if (!streamed) {
        if (result.stdout) await writer.push('stdout', Buffer.from(result.stdout));
        if (result.stderr) await writer.push('stderr', Buffer.from(result.stderr));
      }
      const cancelled = Context.current().cancellationSignal;
      const status: CommandStatus = cancelled.aborted
        ? 'killed_by_release'
        : result.timedOut
          ? 'timed_out'
          : result.signal || control.killed()
            ? 'killed'
            : 'exited';
      const row = await end(deps, key, writer, status, result.exitCode, result.signal, result.timedOut, null);
      // Cancelled (the run is releasing its lease): the driver has ended the command; the step ends cancelled.
      if (cancelled.aborted) throw cancelled.reason;
      return outcomeOf(row, writer);
    } finally {
      clearInterval(beat);
      control.close();
    }
  };
}

async function end(
  deps: ActivityDeps,
  key: string,
  writer: CommandWriter,
  status: CommandStatus,
  exitCode: number | null,
  signal: string | null,
  timedOut: boolean,
  error: string | null,
): Promise<CommandRow> {
  const counts = await writer.close().catch(() => writer.counts);
  const row = await deps.store.finishCommand(key, { status, exitCode, signal, timedOut, error }, counts);
  return row!;
}

/** A second delivery of a started command: it never runs again; one left running is now lost. */
async function settleRedelivered(deps: ActivityDeps, row: CommandRow): Promise<CommandOutcome> {
  const settled =
    row.status === 'running'
      ? await deps.store.finishCommand(row.key, {
          status: 'lost',
          exitCode: null,
          signal: null,
          timedOut: false,
          error: 'the command was started before and its worker stopped: its end is unknown; it is not run again',
        })
      : row;
  return { ...toCommandSummary(settled ?? row), stdout: '', stderr: '', outputLossy: false };
}

/** Text of a tail: UTF-8, a character cut at the start skipped, `lossy` when bytes were not UTF-8. */
function tailText(bytes: Buffer, cut: boolean): { text: string; lossy: boolean } {
  let start = 0;
  if (cut) while (start < 3 && start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
  const body = bytes.subarray(start);
  const text = body.toString('utf8');
  return { text, lossy: !Buffer.from(text, 'utf8').equals(body) };
}

function outcomeOf(row: CommandRow, writer: CommandWriter): CommandOutcome {
  const out = writer.tails.stdout.bytes();
  const err = writer.tails.stderr.bytes();
  const stdout = tailText(out, out.length < row.stdoutBytes);
  const stderr = tailText(err, err.length < row.stderrBytes);
  return {
    ...toCommandSummary(row),
    stdout: stdout.text,
    stderr: stderr.text,
    outputLossy: stdout.lossy || stderr.lossy,
  };
}

/**
 * The command's side of the control channel: kill requests (to the process group, through the driver's
 * `onStarted` control; a driver without one is ended through the step's abort) and its open stdin, read
 * from the store as notifications say there is more.
 */
function commandControl(deps: ActivityDeps, key: string, withStdin: boolean) {
  let handle: CommandControl | null = null;
  let killed = false;
  const abort = new AbortController();
  let inputSeq = 0;
  let stdinDone = !withStdin;
  const waiting: Array<() => void> = [];
  const queue: Buffer[] = [];
  let closed = false;
  const deliverKill = (signal: string) => {
    killed = true;
    try {
      if (handle) return handle.kill(signal as NodeJS.Signals);
    } catch {
      // A signal the target cannot deliver (an ssh server that refuses it): the command is ended instead.
    }
    abort.abort(new Error(`killed (${signal})`));
  };
  let checking = Promise.resolve();
  const check = () => {
    checking = checking
      .then(async () => {
        if (closed) return;
        const signal = await deps.store.takeKillRequest(key);
        if (signal) deliverKill(signal);
        if (!stdinDone) {
          for (const row of await deps.store.readInput(key, inputSeq)) {
            inputSeq = row.seq;
            if (row.data.length) queue.push(row.data);
            if (row.eof) stdinDone = true;
          }
          for (const w of waiting.splice(0)) w();
        }
      })
      .catch(() => undefined);
  };
  const subscribed = deps.store.commandListener.subscribe('control', key, check);
  let unsubscribe: (() => void) | null = null;
  void subscribed.then(
    (u) => (closed ? u() : (unsubscribe = u)),
    () => undefined,
  );
  async function* stdin(): AsyncGenerator<Buffer> {
    for (;;) {
      while (queue.length) yield queue.shift()!;
      if (stdinDone || closed) return;
      await new Promise<void>((r) => waiting.push(r));
    }
  }
  return {
    ready: subscribed.then(() => check()).then(() => checking),
    stdin: stdin(),
    aborted: abort.signal,
    started(control: CommandControl) {
      handle = control;
    },
    killed: () => killed,
    close() {
      closed = true;
      unsubscribe?.();
      for (const w of waiting.splice(0)) w();
    },
  };
}
