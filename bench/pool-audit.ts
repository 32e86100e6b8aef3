// `npm run pool:audit`: a warm pool never leaks a sandbox, even when its worker dies. A fake-provider
// environment keeps a pool of 3; a few runs at a time take from it (each completes once ready) until 200
// have taken a pooled sandbox, while the worker is killed with SIGKILL at 20 random moments and started
// again. Then the environment is archived and the reaper runs once, and the audit: every lease of the
// company has ended, no sandbox folder is left on disk, and no workflow is still running (the runs', the
// pool's). Runs that fail because of a kill are counted, not hidden; their leases must not leak either.
// Exits non-zero when anything leaked. Merges pool_takes and pool_leaked_after_kills into latest.json.
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { poolWorkflowId, type PooledLeaseInfo } from '../contracts/index.js';
import { RunFailedError } from '../client/errors.js';
import { benchTarget, mergeIntoLatest, r1, sleep, startBenchStack, type BenchStack } from './bench-proc.js';

const num = (name: string, fallback: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${v}: not a whole number`);
  return n;
};
const TAKES = num('AUDIT_TAKES', 200);
const KILLS = num('AUDIT_KILLS', 20);
/** Runs in flight at once (more than the pool's size: some go cold while it refills). */
const LANES = Math.max(1, num('AUDIT_LANES', 4));
const POOL_SIZE = 3;
const SEED = num('AUDIT_SEED', Date.now() % 2 ** 31);
const COMPANY = 'audit';
const PROVISION = 'echo ok > provisioned';
const log = (line: string) => console.log(`[pool:audit] ${line}`);
const now = () => performance.now();

/** A small seeded generator (mulberry32): the same AUDIT_SEED kills at the same points. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The fake provider's sandboxes on disk: one folder per lease under leases/<run>/ (ephemeral leases). */
function sandboxFolders(dataDir: string): string[] {
  const root = join(dataDir, 'sandboxes', 'fake', 'leases');
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) =>
      readdirSync(join(root, d.name), { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => join(root, d.name, e.name)),
    );
}

/** Steps that started again after a kill (attempt > 1), by step, from every worker's log. */
function retriedSteps(tmp: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const file of readdirSync(tmp).filter((f) => /^worker-\d+\.log$/.test(f))) {
    for (const line of readFileSync(join(tmp, file), 'utf8').split('\n')) {
      if (!line.includes('"step started"')) continue;
      const { step, attempt } = JSON.parse(line) as { step?: string; attempt?: number };
      if (step && (attempt ?? 1) > 1) counts[step] = (counts[step] ?? 0) + 1;
    }
  }
  return counts;
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const rand = random(SEED);
  const started = now();
  let base = '';
  const stack: BenchStack = await startBenchStack({
    name: 'pool-audit',
    taskQueue: 'pool-audit',
    log,
    workerEnv: (tmp) => ({ ENVRUN_WORKSPACE_ROOTS: tmp }),
    prepare: (tmp) => {
      base = join(tmp, 'base');
      mkdirSync(join(base, 'src'), { recursive: true });
      writeFileSync(join(base, 'lock.txt'), 'deps v1\n');
      for (let i = 0; i < 20; i++) writeFileSync(join(base, 'src', `f${i}.txt`), `file ${i}\n`);
    },
  });
  let failed = false;
  try {
    const { admin, client, store } = stack;
    const env = await admin.createEnvironment({
      companyId: COMPANY,
      name: 'pooled',
      driver: 'sandbox',
      config: {
        provider: 'fake',
        warmPool: {
          size: POOL_SIZE,
          maxIdle: '1h',
          base: { cwd: base, provisionCommand: PROVISION, fingerprintFiles: ['lock.txt'] },
        },
      },
    });
    log(`seed ${SEED}; ${LANES} runs at a time; pool of ${POOL_SIZE}; ${KILLS} kills before ${TAKES} takes`);

    // The kills: at random take counts, each after a random delay (so they land mid-step, anywhere).
    const killAt = Array.from({ length: KILLS }, () => Math.floor(rand() * (TAKES - 10)) + 3).sort((a, b) => a - b);
    let takes = 0;
    let cold = 0;
    let next = 0;
    const failures = new Map<string, number>();
    const runIds: string[] = [];
    const completions: Array<Promise<unknown>> = [];
    const fail = (what: string, err: unknown) => {
      const key = `${what}: ${err instanceof RunFailedError ? err.code : (err as Error).name}: ${(err as Error).message.slice(0, 160)}`;
      failures.set(key, (failures.get(key) ?? 0) + 1);
    };

    /** Waits (a little) for a ready pooled sandbox, so most runs find one. */
    const poolReady = async () => {
      for (let i = 0; i < 30; i++) {
        const rows = await store.listPooledLeases(COMPANY, env.id);
        if (rows.some((l) => (l.metadata?.pool as PooledLeaseInfo | undefined)?.state === 'ready')) return;
        await sleep(100);
      }
    };

    const lane = async (k: number) => {
      while (takes < TAKES) {
        await poolReady();
        const id = `audit-${k}-${next++}`;
        runIds.push(id);
        let ready;
        try {
          ready = await client.startRunAndWaitReady({
            companyId: COMPANY,
            heartbeatRunId: id,
            environmentId: env.id,
            workspace: { baseCwd: base, cwd: base },
            runtimeOverlay: { provisionCommand: PROVISION },
            awaitRetryMs: 0,
          });
        } catch (err) {
          fail('start', err);
          continue;
        }
        if ((ready.lease.metadata?.pool as PooledLeaseInfo | undefined)?.state === 'taken') takes++;
        else cold++;
        // Not waited for here: a release stalled by a kill does not hold the lane.
        completions.push(
          client.completeRun(COMPANY, id, { status: 'succeeded' }).catch((err) => fail('complete', err)),
        );
      }
    };

    const killer = async () => {
      for (let i = 0; i < killAt.length; i++) {
        while (takes < killAt[i]!) await sleep(20);
        await sleep(Math.floor(rand() * 1500));
        const { child } = stack.worker;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
        log(`kill ${i + 1}/${killAt.length} at ${takes} takes (worker pid ${child.pid})`);
        await sleep(Math.floor(rand() * 2000));
        await stack.startWorker();
      }
    };

    await Promise.all([killer(), ...Array.from({ length: LANES }, (_, k) => lane(k))]);
    await Promise.all(completions);
    log(`${takes} takes, ${cold} cold runs, ${runIds.length} runs in all, in ${r1((now() - started) / 1000)} s`);

    // The end of it: archive (the pool retires its sandboxes and ends), then one reaper sweep.
    const archived = await admin.archiveEnvironment(COMPANY, env.id);
    log(`archived (kept resources: ${JSON.stringify(archived.keptResources)})`);
    const pool = client.temporal.workflow.getHandle(poolWorkflowId(COMPANY, env.id));
    const poolDeadline = Date.now() + 5 * 60_000;
    while ((await pool.describe()).status.name === 'RUNNING' && Date.now() < poolDeadline) await sleep(200);
    const reaped = await client.reaperRunOnce();
    log(`reaper: ${reaped.length} leases released`);

    // The audit.
    const leases = await store.listLeases(COMPANY);
    const active = leases.filter((l) => l.status === 'active');
    const takenRows = leases.filter((l) => (l.metadata?.pool as PooledLeaseInfo | undefined)?.state === 'taken');
    const folders = sandboxFolders(stack.dataDir);
    const running: string[] = [];
    for await (const wf of client.temporal.workflow.list({ query: 'ExecutionStatus = "Running"' })) {
      running.push(`${wf.type} ${wf.workflowId}`);
    }
    const poolStatus = (await pool.describe()).status.name;
    const leaked = active.length + folders.length;
    const failedRuns = [...failures.values()].reduce((a, b) => a + b, 0);

    log(`leases: ${leases.length} in all, ${active.length} still active, ${takenRows.length} taken from the pool`);
    for (const l of active)
      log(`  active: ${l.id} run ${l.heartbeatRunId} ${JSON.stringify(l.metadata?.pool ?? null)}`);
    log(`sandbox folders left: ${folders.length}`);
    for (const f of folders) log(`  left: ${f}`);
    log(`workflows still running: ${running.length}; the pool's workflow: ${poolStatus}`);
    for (const r of running) log(`  running: ${r}`);
    log(`steps run again after a kill: ${JSON.stringify(retriedSteps(stack.tmp))}`);
    log(`runs that failed (${failedRuns}):`);
    for (const [why, n] of failures) log(`  ${n}× ${why}`);

    const summary = {
      pool_takes: takes,
      pool_leaked_after_kills: leaked,
      pool_audit_kills: killAt.length,
      pool_audit_runs: runIds.length,
      pool_audit_failed_runs: failedRuns,
      pool_audit_wall_s: r1((now() - started) / 1000),
    };
    console.log(`\n[pool:audit] summary ${JSON.stringify(summary)}`);
    const targets = [
      benchTarget(`pool ${TAKES} takes with ${KILLS} kill -9 (takes)`, takes, TAKES, '≥'),
      benchTarget('pool leaked sandboxes after the kills = 0', leaked, 0, '≤'),
    ];
    const written = mergeIntoLatest(summary, targets, 'pool ');
    if (written) log(`merged into ${written}`);
    failed = leaked > 0 || running.length > 0 || poolStatus === 'RUNNING' || takes < TAKES;
    if (failed) log('FAILED: something was left behind (see above)');
  } finally {
    await stack.stop();
  }
  if (failed) process.exitCode = 1;
}

await main().then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
