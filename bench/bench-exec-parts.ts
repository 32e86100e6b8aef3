// The measured parts of `npm run bench:exec`, each over several repetitions: median of the repetitions'
// values with their min and max.
import type { EnvRunAdmin } from '../client/admin.js';
import type { EnvRunClient } from '../client/runs.js';
import { median, pct, r1, type BenchProcess } from './bench-proc.js';

export interface ExecBenchContext {
  client: EnvRunClient;
  admin: EnvRunAdmin;
  worker: BenchProcess;
  reps: number;
  token: string;
  databaseUrl: string;
  log(line: string): void;
  /** Starts a run on the fake sandbox environment and waits until it is ready; its heartbeatRunId. */
  readyRun(name: string): Promise<string>;
}

const now = () => performance.now();
const spread = (xs: number[]) => `${r1(median(xs))} (${r1(Math.min(...xs))}–${r1(Math.max(...xs))})`;

/** The round trip of `true`: from the client's exec call to its answer, on a ready run. */
async function trueRoundTrip(ctx: ExecBenchContext, rep: number, n = 30): Promise<number> {
  const id = await ctx.readyRun(`true-${rep}`);
  const times: number[] = [];
  for (let i = 0; i < n + 3; i++) {
    const t = now();
    const res = await ctx.client.exec('bench', id, { command: 'true' });
    if (res.exitCode !== 0) throw new Error(`true: exit ${res.exitCode}`);
    if (i >= 3) times.push(now() - t); // the first few warm the run's workflow and the worker's paths
  }
  await ctx.client.completeRun('bench', id, { status: 'succeeded' });
  return pct(times, 50);
}

export async function execParts(ctx: ExecBenchContext): Promise<Record<string, number>> {
  const trueP50: number[] = [];
  for (let rep = 0; rep < ctx.reps; rep++) {
    trueP50.push(await trueRoundTrip(ctx, rep));
    ctx.log(`[bench:exec] rep ${rep + 1}/${ctx.reps}: true round trip p50 ${r1(trueP50.at(-1)!)} ms`);
  }
  ctx.log(`[bench:exec] exec true round trip p50: ${spread(trueP50)} ms (median of ${ctx.reps} repetitions, min–max)`);
  return { exec_true_round_trip_p50_ms: r1(median(trueP50)) };
}
