// Reading a command's journal from any point: the chunks after a sequence number, then (following) each new
// one as its notification arrives, then the command's end. What a reader sees is what the store holds: a
// reader that starts late, or again after it died, misses nothing the journal kept.
import type { CommandEvent } from '../contracts/index.js';
import type { CommandListener } from './command-listener.js';
import { STREAM_CODES, toCommandSummary, type CommandRow } from './commands.js';
import type { Store } from './store.js';

const PAGE = 64;
/** A reader waiting for a notification looks again after this long anyway (a safety net, not the path). */
const RECHECK_MS = 2000;

export interface ReadOptions {
  /** Start after this sequence number (0: from the start). */
  from?: number;
  /** Wait for more output until the command ends (else stop at what is stored now). */
  follow?: boolean;
  signal?: AbortSignal;
}

export async function* readCommandJournal(
  store: Store,
  listener: CommandListener | null,
  command: CommandRow,
  options: ReadOptions = {},
): AsyncGenerator<CommandEvent> {
  const key = command.key;
  let seq = options.from ?? 0;
  let notified = false;
  let wake: (() => void) | null = null;
  const poke = () => {
    notified = true;
    wake?.();
  };
  const follow = options.follow === true && listener !== null;
  const waitFor = async (ms: number) => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = null;
  };
  const unsubscribe = follow ? await listener.subscribe('output', key, poke) : null;
  options.signal?.addEventListener('abort', poke);
  try {
    for (;;) {
      if (options.signal?.aborted) return;
      notified = false;
      const chunks = await store.readOutput(key, seq, PAGE);
      for (const c of chunks) {
        seq = c.seq;
        yield c.stream === STREAM_CODES.truncated
          ? { type: 'truncated', seq: c.seq }
          : {
              type: 'output',
              seq: c.seq,
              stream: c.stream === STREAM_CODES.stderr ? 'stderr' : 'stdout',
              data: c.data,
            };
      }
      if (chunks.length === PAGE) continue;
      // Following, and output came: wait for the next notification (the end has one of its own). Only a
      // read that finds nothing looks at the command's status.
      if (chunks.length && follow) {
        if (!notified) await waitFor(RECHECK_MS);
        continue;
      }
      const row = await store.getCommandByKey(key);
      if (!row) throw new Error(`command ${command.commandId}: its journal was deleted (retention)`);
      if (row.status !== 'running') {
        // Ended: what was written before the end is read first.
        if ((await store.readOutput(key, seq, 1)).length) continue;
        yield { type: 'end', summary: toCommandSummary(row) };
        return;
      }
      if (!follow) return;
      if (!notified) await waitFor(RECHECK_MS);
    }
  } finally {
    unsubscribe?.();
    options.signal?.removeEventListener('abort', poke);
  }
}
