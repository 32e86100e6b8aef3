// `envrun run exec|logs|kill|commands`: a command in a ready run's target, its output streamed from the
// command journal as it is written (raw bytes, or one JSON event a line), reattaching from any point, kill
// and stdin. Starting goes through the run's workflow; the journal, kill and stdin through the store, so
// these need the store (DATABASE_URL or the embedded one). Declared in commands.ts.
import { once } from 'node:events';
import { constants } from 'node:os';
import { pipeline } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import { z } from 'zod';
import { CommandIdSchema, ExternalId, type CommandEvent, type CommandSummary } from '../../contracts/index.js';
import type { EnvRunAdmin } from '../admin.js';
import { InvalidInputError, NotFoundError } from '../errors.js';
import { withAdmin } from './connect.js';
import { check, fail, millis, parseEnvAssignments, readEnvFile, runOf, type RunOptions } from './input.js';
import { columns, print, size, type Output } from './output.js';

interface ExecOptions extends RunOptions {
  envVar?: string[];
  envFile?: string;
  timeout: string;
  commandId?: string;
  detach?: boolean;
  stdin?: boolean;
}

interface LogsOptions extends RunOptions {
  follow?: boolean;
  from?: string;
}

const sequence = z
  .string()
  .regex(/^\d+$/, 'must be a non-negative integer (a sequence number)')
  .transform(Number)
  .pipe(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER));

/** A signal name as typed (TERM, SIGTERM, kill), as the store takes it (SIGTERM); numbers are refused. */
function signalName(value: string): string {
  const upper = value.toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  if (!/^SIG[A-Z0-9]+$/.test(name) || !(name in constants.signals)) {
    fail('--signal', `${JSON.stringify(value)} is not a signal name (e.g. TERM, INT, KILL)`);
  }
  return name;
}

export async function execCommand(command: string, args: string[], o: ExecOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  // A file keeps the values off this command line (any local user reads those); --env-var wins over it.
  const env = { ...(o.envFile === undefined ? {} : readEnvFile(o.envFile)), ...parseEnvAssignments(o.envVar) };
  const timeoutMs = check(millis(1), o.timeout, '--timeout');
  const commandId = o.commandId === undefined ? undefined : check(CommandIdSchema, o.commandId, '--command-id');
  if (o.stdin && o.detach) fail('--stdin', "not with --detach (nothing would write the command's input)");
  await withAdmin(async (admin) => {
    const started = await admin.runs.exec(companyId, runId, {
      command,
      args,
      env,
      timeoutMs,
      wait: false,
      stdinStream: Boolean(o.stdin),
      ...(commandId === undefined ? {} : { commandId }),
    });
    const id = started.commandId;
    if (o.detach) {
      print(o, started, () => id);
      return;
    }
    if (o.json) console.log(JSON.stringify({ type: 'started', commandId: id }));
    const follow = new AbortController();
    const input = o.stdin ? feedStdin(admin, companyId, runId, id, follow.signal) : null;
    try {
      await followCommand(admin, companyId, runId, id, { from: 0, json: Boolean(o.json), abort: follow });
    } finally {
      follow.abort();
      await input;
    }
  });
}

export async function commandLogs(id: string | undefined, o: LogsOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const commandId = id === undefined ? null : check(CommandIdSchema, id, 'id');
  const from = o.from === undefined ? 0 : check(sequence, o.from, '--from');
  await withAdmin(async (admin) => {
    // No id: the run's latest command, named once so a newer one started meanwhile is not mixed in.
    const resolved = commandId ?? (await admin.getCommand(companyId, runId, null)).commandId;
    await followCommand(admin, companyId, runId, resolved, {
      from,
      json: Boolean(o.json),
      follow: Boolean(o.follow),
      abort: new AbortController(),
    });
  });
}

export async function killCommand(id: string, o: RunOptions & { signal: string }): Promise<void> {
  const [companyId, runId] = runOf(o);
  const commandId = check(CommandIdSchema, id, 'id');
  const signal = signalName(o.signal);
  const summary = await withAdmin((a) => a.killCommand(companyId, runId, commandId, signal));
  print(o, { commandId: summary.commandId, killSignal: signal }, () => `${summary.commandId}\t${signal} sent`);
}

export async function listCommands(o: RunOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const commands = await withAdmin((a) => a.listCommands(companyId, runId));
  print(o, commands, () => (commands.length ? table(commands) : '(none)'));
}

// ---- following a command ---------------------------------------------------------------------------------

interface FollowOptions {
  from: number;
  json: boolean;
  /** Wait for the command's end (default true). */
  follow?: boolean;
  /** Aborted: stop reading (Ctrl-C, stdout closed, the caller is done). */
  abort: AbortController;
}

/**
 * Prints a command's journal from `from` on: raw bytes to stdout and stderr as the command wrote them (or one
 * JSON event a line), waiting for stdout to drain when it is slow. Sets the exit code: the command's exit
 * status once it ended; 130 when Ctrl-C stopped the reading (the command goes on).
 */
async function followCommand(
  admin: EnvRunAdmin,
  companyId: string,
  runId: string,
  commandId: string,
  options: FollowOptions,
): Promise<void> {
  const { exitStatus } = await import('../commands.js'); // loaded with the admin already
  const { abort } = options;
  let interrupted = false;
  let stdoutClosed = false;
  const onInterrupt = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C while closing
    interrupted = true;
    abort.abort();
  };
  const onStdoutError = () => {
    stdoutClosed = true;
    abort.abort();
  };
  process.on('SIGINT', onInterrupt);
  process.stdout.on('error', onStdoutError);
  let end: CommandSummary | null = null;
  try {
    const events = admin.streamCommand(companyId, runId, commandId, {
      from: options.from,
      follow: options.follow ?? true,
      signal: abort.signal,
    });
    try {
      for await (const event of events) {
        if (abort.signal.aborted) break;
        if (options.json) await write(process.stdout, `${JSON.stringify(jsonEvent(event))}\n`, abort.signal);
        else if (event.type === 'output') {
          await write(event.stream === 'stdout' ? process.stdout : process.stderr, event.data, abort.signal);
        }
        if (event.type === 'truncated') {
          say(`command ${commandId}: its output reached the journal's limit; what it wrote past it was not kept`);
        }
        if (event.type === 'end') end = event.summary;
      }
    } catch (err) {
      // A command whose step never reached the store (it could not start) has no journal: the run says how it ended.
      if (!(err instanceof NotFoundError) || abort.signal.aborted) throw err;
      end =
        (await admin.runs.commands(companyId, runId).catch(() => [])).find((c) => c.commandId === commandId) ?? null;
      if (!end || end.status === 'running') throw err;
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    process.stdout.off('error', onStdoutError);
  }
  if (end) {
    const why = endLine(end);
    if (why) say(`command ${commandId} ${why}`);
    process.exitCode = exitStatus(end);
    return;
  }
  const where = `--company ${companyId} --run ${runId} ${commandId}`;
  if (interrupted || stdoutClosed) {
    say(`stopped following; command ${commandId} goes on`);
    say(`reattach: envrun run logs ${where} --follow`);
    say(`kill it:  envrun run kill ${where}`);
    process.exitCode = interrupted ? 130 : 128 + constants.signals.SIGPIPE;
    return;
  }
  // Not following: what is stored so far was printed.
  say(`command ${commandId} is still running (envrun run logs ${where} --follow waits for its end)`);
}

/** Why a command that did not end on its own ended, as a line for stderr (null: its exit status says it). */
function endLine(s: CommandSummary): string | null {
  const detail = s.error ? `: ${s.error}` : '';
  switch (s.status) {
    case 'lost':
      return `was lost${detail}`;
    case 'failed':
      return `failed${detail}`;
    case 'killed_by_release':
      return `was ended by the run's release${detail}`;
    case 'timed_out':
      return 'timed out';
    default:
      return null;
  }
}

/** A journal event as a JSON line: bytes as base64. */
function jsonEvent(event: CommandEvent): Record<string, unknown> {
  return event.type === 'output' ? { ...event, data: event.data.toString('base64') } : event;
}

/** Writes, and when the stream asks to wait, waits for it to drain (or for the reading to stop). */
async function write(stream: NodeJS.WriteStream, data: Buffer | string, signal: AbortSignal): Promise<void> {
  if (stream.write(data)) return;
  await once(stream, 'drain', { signal }).catch((err: unknown) => {
    if (!signal.aborted) throw err;
  });
}

function say(line: string): void {
  process.stderr.write(`envrun: ${line}\n`);
}

/**
 * Pipes this process's stdin into the command's open stdin; its end closes the command's. Stopping early
 * (the command ended, Ctrl-C) leaves the command's stdin as it is.
 */
async function feedStdin(
  admin: EnvRunAdmin,
  companyId: string,
  runId: string,
  commandId: string,
  signal: AbortSignal,
): Promise<void> {
  let sink: Writable | null = null;
  try {
    sink = await admin.openStdin(companyId, runId, commandId);
    await pipeline(process.stdin, sink, { signal });
  } catch (err) {
    // The command ended (its stdin is closed) or the reading stopped: its end is what the follow reports.
    if (!signal.aborted && !(err instanceof InvalidInputError)) say(`stdin: ${(err as Error).message}`);
  } finally {
    sink?.destroy();
    process.stdin.destroy();
  }
}

// ---- the run's commands as a table -------------------------------------------------------------------------

function table(commands: CommandSummary[]): string {
  const rows = [
    ['ID', 'STATUS', 'EXIT', 'STDOUT', 'STDERR', 'STARTED', 'DURATION'],
    ...commands.map((c) => [
      c.commandId,
      c.truncated ? `${c.status} (truncated)` : c.status,
      c.exitCode !== null ? String(c.exitCode) : (c.signal ?? '-'),
      size(c.stdoutBytes),
      size(c.stderrBytes),
      c.startedAt ?? '-',
      c.durationMs === null ? '-' : duration(c.durationMs),
    ]),
  ];
  return columns(rows);
}

function duration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}
