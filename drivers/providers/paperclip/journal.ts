// What a Paperclip plugin provider remembers of its leases on this host, in small JSON files under its
// folder of the data dir (0700): the lease an acquire made (by the step's idempotency key), so a retried
// acquire adopts it instead of making a second sandbox; the lease a reuse key shares; and where a lease's
// workspace was realized, for its sync-back. A record is a hint, never trusted alone: the lease it names is
// resumed through the plugin before it is used.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

export type JournalKind = 'acquired' | 'reuse' | 'realized';

const Entry = z.object({
  providerLeaseId: z.string().min(1),
  metadata: z.record(z.string(), z.unknown()).default({}),
  expiresAt: z.string().nullable().default(null),
  cwd: z.string().optional(),
});
export type JournalEntry = z.infer<typeof Entry>;

/** Records older than this are dropped when the provider starts: their leases have long ended. */
const MAX_AGE_MS = 30 * 24 * 3600_000;

export class LeaseJournal {
  constructor(private readonly dir: string) {}

  private file(kind: JournalKind, key: string): string {
    return join(this.dir, kind, `${createHash('sha256').update(key).digest('hex').slice(0, 40)}.json`);
  }

  async get(kind: JournalKind, key: string): Promise<JournalEntry | null> {
    let text: string;
    try {
      text = await readFile(this.file(kind, key), 'utf8');
    } catch {
      return null;
    }
    try {
      const parsed = Entry.safeParse(JSON.parse(text));
      return parsed.success ? parsed.data : null;
    } catch {
      return null; // a torn or foreign file is no record
    }
  }

  /** Written whole or not at all (a temporary file renamed into place). */
  async put(kind: JournalKind, key: string, entry: JournalEntry): Promise<void> {
    const target = this.file(kind, key);
    await mkdir(join(this.dir, kind), { recursive: true, mode: 0o700 });
    const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
    await rename(tmp, target);
  }

  async drop(kind: JournalKind, key: string): Promise<void> {
    await rm(this.file(kind, key), { force: true });
  }

  /** Forgets every record of a lease that has ended. */
  async forget(providerLeaseId: string): Promise<void> {
    await this.sweep((entry) => entry?.providerLeaseId === providerLeaseId);
  }

  /** Drops the records older than 30 days; a failure is ignored (they are hints). */
  async prune(now = Date.now()): Promise<void> {
    await this.sweep(null, now - MAX_AGE_MS).catch(() => undefined);
  }

  private async sweep(match: ((entry: JournalEntry | null) => boolean) | null, olderThan = 0): Promise<void> {
    for (const kind of ['acquired', 'reuse', 'realized'] as const) {
      const names = await readdir(join(this.dir, kind)).catch(() => [] as string[]);
      for (const name of names) {
        const path = join(this.dir, kind, name);
        if (match) {
          let entry: JournalEntry | null = null;
          try {
            const parsed = Entry.safeParse(JSON.parse(await readFile(path, 'utf8')));
            entry = parsed.success ? parsed.data : null;
          } catch {
            /* unreadable: not this lease's */
          }
          if (match(entry)) await rm(path, { force: true });
        } else {
          const mtime = (await stat(path).catch(() => null))?.mtimeMs;
          if (mtime !== undefined && mtime < olderThan) await rm(path, { force: true });
        }
      }
    }
  }
}
