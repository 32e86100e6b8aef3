// Queries over commands and their journals: the row a command gets when it starts, its output in numbered
// chunks (bytea, binary end to end), its open stdin, kill requests, and the reaper's deletion of old
// journals. Writers NOTIFY `envrun_command_output` ("<key>:<seq>" or "<key>:end") and
// `envrun_command_control` ("<key>") in the same statement as the write: a listener that hears one finds the
// rows it names.
import { and, desc, eq, sql } from 'drizzle-orm';
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { CommandStatus, CommandSummary } from '../contracts/index.js';
import { iso, isoOrNull, type QueryBase } from './base.js';
import { CommandListener, listenerConfigOf } from './command-listener.js';
import { commands } from './schema.js';

/** The notification channels (command-listener.ts listens to the same names). */
export const OUTPUT_CHANNEL = 'envrun_command_output';
export const CONTROL_CHANNEL = 'envrun_command_control';
/** Stream numbers in `command_output`. */
export const STREAM_CODES = { stdout: 1, stderr: 2, truncated: 3 } as const;

export type CommandRow = typeof commands.$inferSelect;

export function toCommandSummary(r: CommandRow): CommandSummary {
  return {
    commandId: r.commandId,
    status: r.status as CommandStatus,
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    startedAt: iso(r.startedAt),
    endedAt: isoOrNull(r.endedAt),
    durationMs: r.endedAt ? r.endedAt.getTime() - r.startedAt.getTime() : null,
    stdoutBytes: r.stdoutBytes,
    stderrBytes: r.stderrBytes,
    truncated: r.truncated,
    error: r.error,
  };
}

export interface CommandRef {
  companyId: string;
  heartbeatRunId: string;
  commandId: string;
}

/** The name a command's start is notified under, before it has a key: a digest of its reference. */
export function startKeyOf(ref: CommandRef): string {
  return `start-${createHash('sha256')
    .update(JSON.stringify([ref.companyId, ref.heartbeatRunId, ref.commandId]))
    .digest('hex')
    .slice(0, 40)}`;
}

export interface NewCommand extends CommandRef {
  leaseId: string | null;
  hostId: string | null;
  command: string;
  args: string[];
}

/** Counters a journal's writer keeps, stored with each flush. */
export interface JournalCounts {
  stdoutBytes: number;
  stderrBytes: number;
  keptBytes: number;
  truncated: boolean;
}

export interface OutputChunk {
  seq: number;
  stream: number;
  data: Buffer;
}

export interface CommandEnd {
  status: CommandStatus;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  error: string | null;
}

export function commandQueries<B extends QueryBase>(Base: B) {
  return class extends Base {
    commandListenerOpened: CommandListener | null = null;
    journalBatcher: JournalBatcher | null = null;

    /** node-postgres' pool under the store: bytea parameters go as binary, several statements as one. */
    get pool(): pg.Pool {
      return (this.db as unknown as { $client: pg.Pool }).$client;
    }

    /** The process's LISTEN connection for the command channels, opened on first use. */
    get commandListener(): CommandListener {
      return (this.commandListenerOpened ??= new CommandListener(listenerConfigOf(this.pool)));
    }

    async closeCommandListener(): Promise<void> {
      await this.commandListenerOpened?.close();
      this.commandListenerOpened = null;
    }

    /**
     * Writes the command's row once. `created: false` when a row for the same id exists (a second start of
     * the same command): the existing row is returned and nothing runs again.
     */
    async openCommand(c: NewCommand): Promise<{ created: boolean; row: CommandRow }> {
      const inserted = await this.db
        .insert(commands)
        .values(c)
        .onConflictDoNothing({ target: [commands.companyId, commands.heartbeatRunId, commands.commandId] })
        .returning();
      if (inserted[0]) {
        // Readers waiting for the command to exist (a detached start answers before its step runs).
        await this.pool.query(`select pg_notify('${OUTPUT_CHANNEL}', $1)`, [`${startKeyOf(c)}:start`]);
        return { created: true, row: inserted[0] };
      }
      return { created: false, row: (await this.getCommandRow(c))! };
    }

    async getCommandRow(ref: CommandRef): Promise<CommandRow | null> {
      const rows = await this.db
        .select()
        .from(commands)
        .where(
          and(
            eq(commands.companyId, ref.companyId),
            eq(commands.heartbeatRunId, ref.heartbeatRunId),
            eq(commands.commandId, ref.commandId),
          ),
        );
      return rows[0] ?? null;
    }

    async getCommandByKey(key: string): Promise<CommandRow | null> {
      return (await this.db.select().from(commands).where(eq(commands.key, key)))[0] ?? null;
    }

    /** The run's commands, newest first (at most `limit`). */
    async listCommands(companyId: string, heartbeatRunId: string, limit = 1000): Promise<CommandRow[]> {
      return this.db
        .select()
        .from(commands)
        .where(and(eq(commands.companyId, companyId), eq(commands.heartbeatRunId, heartbeatRunId)))
        .orderBy(desc(commands.startedAt), desc(commands.key))
        .limit(limit);
    }

    /** The output the company's journals hold, in bytes. */
    async companyOutputBytes(companyId: string): Promise<number> {
      const r = await this.pool.query<{ n: string | null }>(
        'select sum(kept_bytes)::bigint as n from commands where company_id = $1',
        [companyId],
      );
      return Number(r.rows[0]?.n ?? 0);
    }

    /**
     * Appends chunks (seq ascending) and stores the writer's counters, then notifies. The appends of all the
     * process's commands go through one batcher: one statement in flight, carrying every command's pending
     * chunks (many commands printing lines cost one statement, not one each).
     */
    appendOutput(key: string, chunks: OutputChunk[], counts: JournalCounts): Promise<void> {
      this.journalBatcher ??= new JournalBatcher(this.pool);
      return this.journalBatcher.append(key, chunks, counts);
    }

    /** Ends a running command (a row already ended is left as it is); notifies its readers. */
    async finishCommand(key: string, end: CommandEnd, counts?: JournalCounts): Promise<CommandRow | null> {
      await this.pool.query(
        `with upd as (
           update commands set status = $2, exit_code = $3, signal = $4, timed_out = $5, error = $6,
             ended_at = now(), kill_signal = null,
             stdout_bytes = coalesce($7, stdout_bytes), stderr_bytes = coalesce($8, stderr_bytes),
             kept_bytes = coalesce($9, kept_bytes), truncated = coalesce($10, truncated)
           where key = $1 and status = 'running' returning key)
         select key, pg_notify('${OUTPUT_CHANNEL}', key || ':end') from upd`,
        [
          key,
          end.status,
          end.exitCode,
          end.signal,
          end.timedOut,
          end.error,
          counts?.stdoutBytes ?? null,
          counts?.stderrBytes ?? null,
          counts?.keptBytes ?? null,
          counts?.truncated ?? null,
        ],
      );
      return this.getCommandByKey(key);
    }

    /** Chunks after `afterSeq`, in order, at most `limit` of them. */
    async readOutput(key: string, afterSeq: number, limit = 64): Promise<OutputChunk[]> {
      const r = await this.pool.query<{ seq: number; stream: number; data: Buffer }>(
        'select seq, stream, data from command_output where command_key = $1 and seq > $2 order by seq limit $3',
        [key, afterSeq, limit],
      );
      return r.rows;
    }

    /** Asks the worker running the command to send it `signal`; false when it is not running. */
    async requestKill(key: string, signal: string): Promise<boolean> {
      const r = await this.pool.query(
        `with upd as (update commands set kill_signal = $2 where key = $1 and status = 'running' returning key)
         select pg_notify('${CONTROL_CHANNEL}', key::text) from upd`,
        [key, signal],
      );
      return (r.rowCount ?? 0) > 0;
    }

    /** Appends input to a running command's open stdin (`eof`: closes it); false when it is not running. */
    async writeInput(key: string, data: Buffer, eof: boolean): Promise<boolean> {
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await this.pool.query(
            `with ins as (
               insert into command_input (command_key, seq, data, eof)
               select c.key, coalesce((select max(seq) from command_input where command_key = c.key), 0) + 1, $2, $3
               from commands c where c.key = $1 and c.status = 'running' returning command_key)
             select pg_notify('${CONTROL_CHANNEL}', command_key::text) from ins`,
            [key, data, eof],
          );
          return (r.rowCount ?? 0) > 0;
        } catch (err) {
          // Two writers took the same seq: the second tries again after the first.
          if ((err as { code?: string }).code !== '23505' || attempt >= 20) throw err;
        }
      }
    }

    /** Input after `afterSeq`, in order. */
    async readInput(key: string, afterSeq: number): Promise<Array<{ seq: number; data: Buffer; eof: boolean }>> {
      const r = await this.pool.query<{ seq: number; data: Buffer; eof: boolean }>(
        'select seq, data, eof from command_input where command_key = $1 and seq > $2 order by seq limit 256',
        [key, afterSeq],
      );
      return r.rows;
    }

    /** Takes the pending kill request, if any (one delivery). */
    async takeKillRequest(key: string): Promise<string | null> {
      const r = await this.pool.query<{ signal: string }>(
        `update commands c set kill_signal = null from (select key, kill_signal from commands where key = $1
           for update) old where c.key = old.key and old.kill_signal is not null returning old.kill_signal as signal`,
        [key],
      );
      return r.rows[0]?.signal ?? null;
    }

    /**
     * Deletes the journals of commands whose lease was released more than `retentionMs` ago (a command
     * without a lease: ended that long ago). Their chunks and input go with them. Returns how many.
     */
    async deleteExpiredCommands(retentionMs: number, now = new Date()): Promise<number> {
      const cutoff = new Date(now.getTime() - retentionMs);
      const r = await this.db.execute(sql`
        delete from commands c
        where c.status <> 'running' and (
          (c.lease_id is not null and exists (
            select 1 from environment_leases l where l.id = c.lease_id and l.released_at is not null
              and l.released_at < ${cutoff}))
          or (c.lease_id is null and c.ended_at < ${cutoff}))`);
      return r.rowCount ?? 0;
    }
  };
}

interface PendingAppend {
  key: string;
  chunks: OutputChunk[];
  counts: JournalCounts;
  bytes: number;
  done(err?: Error): void;
}

/** Tries of one journal statement before its commands' writers fail (backing off: about 6 s in all). */
const APPEND_ATTEMPTS = 6;
/** Most bytes of output one statement carries (a longer queue goes in several). */
const STATEMENT_BYTES = 4 * 1024 * 1024;

/**
 * One process's journal writes: appends queue while a statement is in flight and go together in the next
 * one (their chunks in one INSERT, their counters in one UPDATE, a NOTIFY each). Each command's writer has
 * at most one append queued, so a command's chunks are stored in order.
 */
export class JournalBatcher {
  private queue: PendingAppend[] = [];
  private flushing = false;

  constructor(private readonly pool: pg.Pool) {}

  append(key: string, chunks: OutputChunk[], counts: JournalCounts): Promise<void> {
    return new Promise((resolve, reject) => {
      const bytes = chunks.reduce((n, c) => n + c.data.length, 0);
      this.queue.push({ key, chunks, counts: { ...counts }, bytes, done: (err) => (err ? reject(err) : resolve()) });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.queue.length) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && (n === 0 || bytes + this.queue[n]!.bytes <= STATEMENT_BYTES)) {
        bytes += this.queue[n]!.bytes;
        n++;
      }
      const batch = this.queue.splice(0, n);
      const statement = batchStatement(batch);
      // A brief outage of the store holds the commands back (their writers wait) rather than failing them:
      // the statement is idempotent (chunks by their seq, counters as values), so it is simply sent again.
      for (let attempt = 1; ; attempt++) {
        try {
          await this.pool.query(statement);
          for (const p of batch) p.done();
          break;
        } catch (err) {
          if (attempt >= APPEND_ATTEMPTS) {
            for (const p of batch) p.done(err as Error);
            break;
          }
          await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
        }
      }
    }
    this.flushing = false;
  }
}

function batchStatement(batch: PendingAppend[]): { text: string; values: unknown[] } {
  const values: unknown[] = [
    batch.map((p) => p.key),
    batch.map((p) => p.counts.stdoutBytes),
    batch.map((p) => p.counts.stderrBytes),
    batch.map((p) => p.counts.keptBytes),
    batch.map((p) => p.counts.truncated),
    batch.map((p) => `${p.key}:${p.chunks.at(-1)?.seq ?? 0}`),
  ];
  const rows: string[] = [];
  for (const p of batch) {
    if (p.chunks.length === 0) continue; // a counters-only append (a writer's close) inserts nothing
    values.push(p.key);
    const k = values.length;
    for (const c of p.chunks) {
      values.push(c.seq, c.stream, c.data); // a Buffer goes as a binary parameter
      const n = values.length;
      rows.push(`($${k}::uuid, $${n - 2}::int, $${n - 1}::smallint, $${n}::bytea)`);
    }
  }
  const insert = rows.length
    ? `ins as (insert into command_output (command_key, seq, stream, data) values ${rows.join(', ')}
        on conflict do nothing),`
    : '';
  return {
    text: `with ${insert} upd as (
        update commands c set stdout_bytes = v.o, stderr_bytes = v.e, kept_bytes = v.k, truncated = v.t
        from unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[]) as v(key, o, e, k, t)
        where c.key = v.key)
      select pg_notify('${OUTPUT_CHANNEL}', n) from unnest($6::text[]) as n`,
    values,
  };
}
