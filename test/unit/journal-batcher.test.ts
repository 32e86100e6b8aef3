// The journal's batcher: appends of several commands go in one statement while another is in flight; a
// statement that fails (the store briefly gone) is sent again, and only a store that stays gone fails the
// writers.
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { JournalBatcher } from '../../store/commands.js';

const counts = { stdoutBytes: 1, stderrBytes: 0, keptBytes: 1, truncated: false };
const chunk = (seq: number) => ({ seq, stream: 1, data: Buffer.from('x') });

/** A pool whose query fails `failures` times, then answers after `delayMs`; it records each statement. */
function pool(failures: number, delayMs = 0) {
  const sent: Array<{ text: string; values: unknown[] }> = [];
  let left = failures;
  return {
    sent,
    pool: {
      async query(q: { text: string; values: unknown[] }) {
        sent.push(q);
        await new Promise((r) => setTimeout(r, delayMs));
        if (left-- > 0) throw new Error('connection terminated unexpectedly');
        return { rows: [], rowCount: 0 };
      },
    } as unknown as pg.Pool,
  };
}

describe('journal batcher', () => {
  it("appends queued while a statement is in flight go together in the next one, each command's chunks kept", async () => {
    const p = pool(0, 50);
    const b = new JournalBatcher(p.pool);
    const first = b.append('00000000-0000-0000-0000-000000000001', [chunk(1)], counts);
    const rest = ['2', '3', '4'].map((k) =>
      b.append(`00000000-0000-0000-0000-00000000000${k}`, [chunk(1), chunk(2)], counts),
    );
    await Promise.all([first, ...rest]);
    expect(p.sent).toHaveLength(2);
    expect(p.sent[1]!.values[0]).toEqual([2, 3, 4].map((k) => `00000000-0000-0000-0000-00000000000${k}`));
    expect(p.sent[1]!.text.match(/::bytea/g)).toHaveLength(6);
  });

  it('a statement that fails twice is sent again, the same each time; the append succeeds', async () => {
    const p = pool(2);
    await new JournalBatcher(p.pool).append('00000000-0000-0000-0000-000000000001', [chunk(1)], counts);
    expect(p.sent).toHaveLength(3);
    expect(p.sent[2]).toEqual(p.sent[0]);
    expect(p.sent[0]!.text).toContain('on conflict do nothing');
  });

  it('a store that stays gone fails the append after 6 tries', async () => {
    const p = pool(100);
    await expect(
      new JournalBatcher(p.pool).append('00000000-0000-0000-0000-000000000001', [chunk(1)], counts),
    ).rejects.toThrow(/connection terminated/);
    expect(p.sent).toHaveLength(6);
  }, 20_000);
});
