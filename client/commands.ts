// The store's side of commands: reading a command's journal from any point (following it live through the
// store's notifications), its summary and the run's list, kill requests and an open stdin. The runs client
// (Temporal only) starts commands and gets their outcome; everything here needs the store, like
// environments and leases do. EnvRunAdmin exposes these.
import { Writable } from 'node:stream';
import { constants } from 'node:os';
import type { CommandEvent, CommandSummary } from '../contracts/index.js';
import { readCommandJournal } from '../store/command-stream.js';
import { startKeyOf, toCommandSummary, type CommandRow, type Store } from '../store/store.js';
import { InvalidInputError, NotFoundError } from './errors.js';

export interface StreamCommandOptions {
  /** Start after this sequence number (0, the default: from the start). */
  from?: number;
  /** Keep reading until the command ends (default true); false: what is stored now, then its end if it ended. */
  follow?: boolean;
  signal?: AbortSignal;
}

/** How long a reader waits for a command that was started but whose step has not written its row yet. */
const START_WAIT_MS = 30_000;

/**
 * The command's row: by id, or the run's latest when `commandId` is null. A command started detached may
 * not have its row yet: `waitMs` waits that long for it (woken by its start's notification).
 */
export async function commandRow(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string | null,
  waitMs = 0,
): Promise<CommandRow> {
  const find = async () =>
    commandId
      ? await store.getCommandRow({ companyId, heartbeatRunId, commandId })
      : ((await store.listCommands(companyId, heartbeatRunId, 1))[0] ?? null);
  let row = await find();
  if (!row && commandId && waitMs > 0) {
    let wake: () => void = () => undefined;
    const unsubscribe = await store.commandListener.subscribe(
      'output',
      startKeyOf({ companyId, heartbeatRunId, commandId }),
      () => wake(),
    );
    try {
      const deadline = Date.now() + waitMs;
      while (!(row = await find()) && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(1000, Math.max(0, deadline - Date.now())));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      unsubscribe();
    }
  }
  if (!row) {
    throw new NotFoundError(
      commandId
        ? `command ${commandId} of run ${companyId}/${heartbeatRunId} not found`
        : `run ${companyId}/${heartbeatRunId} has no commands`,
    );
  }
  return row;
}

/**
 * A command's output from any point, as events: each chunk (raw bytes, per stream, numbered), a marker
 * where the journal stopped keeping output, then the command's end. Following waits for new chunks through
 * PostgreSQL's LISTEN/NOTIFY, so a line arrives as soon as it is stored.
 */
export async function* streamCommand(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string | null,
  options: StreamCommandOptions = {},
): AsyncGenerator<CommandEvent> {
  const follow = options.follow ?? true;
  const row = await commandRow(store, companyId, heartbeatRunId, commandId, follow ? START_WAIT_MS : 0);
  yield* readCommandJournal(store, follow ? store.commandListener : null, row, {
    from: options.from ?? 0,
    follow,
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/** The whole output the journal kept, per stream (bounded by ENVRUN_MAX_COMMAND_OUTPUT_BYTES). */
export async function commandOutput(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string,
): Promise<{ stdout: Buffer; stderr: Buffer; truncated: boolean; summary: CommandSummary | null }> {
  const parts = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  let truncated = false;
  let summary: CommandSummary | null = null;
  for await (const e of streamCommand(store, companyId, heartbeatRunId, commandId, { follow: false })) {
    if (e.type === 'output') parts[e.stream].push(e.data);
    else if (e.type === 'truncated') truncated = true;
    else summary = e.summary;
  }
  return { stdout: Buffer.concat(parts.stdout), stderr: Buffer.concat(parts.stderr), truncated, summary };
}

export async function listCommands(store: Store, companyId: string, heartbeatRunId: string): Promise<CommandSummary[]> {
  return (await store.listCommands(companyId, heartbeatRunId)).map(toCommandSummary);
}

/** Signals a running command's whole process group, through the worker running it. */
export async function killCommand(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string,
  signal = 'SIGTERM',
): Promise<CommandSummary> {
  const name = signal.toUpperCase().startsWith('SIG') ? signal.toUpperCase() : `SIG${signal.toUpperCase()}`;
  if (!(name in constants.signals))
    throw new InvalidInputError(`signal: ${JSON.stringify(signal)} is not a signal name`);
  const row = await commandRow(store, companyId, heartbeatRunId, commandId, START_WAIT_MS);
  if (!(await store.requestKill(row.key, name))) {
    throw new InvalidInputError(
      `command ${commandId} is ${(await commandRow(store, companyId, heartbeatRunId, commandId)).status}, not running`,
    );
  }
  return toCommandSummary(row);
}

/**
 * A writable stream into a running command's open stdin (the command was started with `stdinStream`);
 * ending it closes the command's stdin. Each write is stored before its callback runs.
 */
export async function openStdin(
  store: Store,
  companyId: string,
  heartbeatRunId: string,
  commandId: string,
): Promise<Writable> {
  const row = await commandRow(store, companyId, heartbeatRunId, commandId, START_WAIT_MS);
  const write = async (data: Buffer, eof: boolean) => {
    if (!(await store.writeInput(row.key, data, eof))) {
      throw new InvalidInputError(`command ${commandId} is not running: its stdin is closed`);
    }
  };
  return new Writable({
    highWaterMark: 256 * 1024,
    write(chunk: Buffer, _enc, done) {
      write(chunk, false).then(() => done(), done);
    },
    final(done) {
      write(Buffer.alloc(0), true).then(() => done(), done);
    },
  });
}

/** The exit status a shell would report: the exit code, else 128 + the signal's number (124: timed out). */
export function exitStatus(summary: CommandSummary): number {
  if (summary.exitCode !== null) return summary.exitCode;
  if (summary.status === 'timed_out') return 124;
  const n = summary.signal ? (constants.signals as Record<string, number>)[summary.signal] : undefined;
  return n === undefined ? 1 : 128 + n;
}
