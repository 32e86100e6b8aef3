// Renders a `npm run bench` result as the markdown tables of docs/benchmarks.md and the README.
// Usage: npx tsx bench/bench-table.ts [bench/results/latest.json]
import { readFileSync } from 'node:fs';
// Types only: erased when this runs, so the bench itself is not loaded.
import type { ModeStats, Spread } from './bench-modes.js';
import type { ClusterModeStats } from './bench-cluster.js';

interface ShapeReport {
  events: number;
  bytes: number;
  counts: {
    total: {
      workflowTasks: number;
      regular: number;
      regularHost: number;
      local: number;
      upserts: number;
      memos: number;
      patches: number;
      timers: number;
    };
  };
}
interface Result {
  startedAt: string;
  durationS: number;
  machine: { platform: string; node: string; cpus: number; cpuModel: string | null; loadAvgAtStart: string };
  settings: {
    reps: number;
    runsC1: number;
    runsC50: number;
    concurrency: number;
    sandboxRuns: number;
    maxCachedWorkflows: number;
    evict: { held: number; cache: number; samples: number };
    envrunWorkerRuntime: string;
  };
  summary: Record<string, number | null>;
  targets: Array<{ target: string; measured: number | null; limit: number; pass: boolean | null }>;
  shape: Record<string, ShapeReport> & { mismatches: string[] };
  modes: Record<string, ModeStats>;
  memory: {
    idle: Record<string, { rssAnonMb: number }>;
    held: Array<{
      held: number;
      envrunRssAnonMb: number;
      bareShapeRssAnonMb: number | null;
      envrunSecondsToReady: number;
    }>;
  };
  evicted: Record<string, { evictedCompleteP50Ms: number; cachedCompleteP50Ms: number; evictedSamples: number }>;
  /** `npm run bench -- --engine cluster` (bench/bench-cluster.ts). */
  cluster?: {
    startedAt: string;
    durationS: number;
    engine: { server: string; persistence: string; historyShards: number };
    machine: { loadAvgAtStart: string; loadAvgAtEnd: string };
    settings: { reps: number; runsC1: number; runsC50: number; concurrency: number; envrunWorkerRuntime: string };
    modes: Record<string, ClusterModeStats>;
    postgresPerRun: Record<string, Record<string, { transactions: number; rowsWritten: number }>> | null;
  };
}

const file = process.argv[2] ?? 'bench/results/latest.json';
const r = JSON.parse(readFileSync(file, 'utf8')) as Result;
const out: string[] = [];
const say = (line = '') => out.push(line);
const v = (x: number | null | undefined, unit = '') => (x === null || x === undefined ? '—' : `${x}${unit}`);
const spread = (s: Spread | undefined) => (s ? `${s.median} (${s.min}–${s.max})` : '—');
const table = (head: string[], rows: Array<Array<string | number>>) => {
  say(`| ${head.join(' | ')} |`);
  say(`| ${head.map(() => '---').join(' | ')} |`);
  for (const row of rows) say(`| ${row.join(' | ')} |`);
  say();
};
const s = r.settings;
const n = s.concurrency;

say(
  `${r.startedAt.slice(0, 10)}, ${r.machine.cpus} × ${r.machine.cpuModel ?? 'cpu'}, ${r.machine.node}, load average at start ` +
    `${r.machine.loadAvgAtStart.split(' ').slice(0, 3).join(' ')}; ${s.reps} interleaved repetitions, ${s.runsC1} runs per ` +
    `mode at c=1 and ${s.runsC50} at c=${n} in each; envrun's worker from ${s.envrunWorkerRuntime}; ${r.durationS} s in all.`,
);
say();
say(`Start→ready latency at c=1 and throughput at c=${n}: median of the repetitions (min–max); p99 over every sample.`);
say();
const modeRows = ['floor', 'bare_shape', 'bare_regular', 'envrun', 'in_process', 'sandbox'].map((mode) => {
  const one = r.modes[`${mode}@1`];
  const many = r.modes[`${mode}@${n}`];
  const cpu = many?.cpu;
  return [
    mode,
    spread(one?.p50),
    v(one?.pooledP99),
    v(one?.completeP50),
    spread(many?.runsPerS),
    v(many?.p50.median),
    cpu ? `${cpu.worker} / ${cpu.server} / ${cpu.postgres} / ${cpu.client}` : '—',
  ];
});
table(
  [
    'mode',
    'c=1 p50 ms',
    'c=1 p99 ms',
    'c=1 complete p50 ms',
    `c=${n} runs/s`,
    `c=${n} p50 ms`,
    `c=${n} CPU ms/run: worker / Temporal / PostgreSQL / client`,
  ],
  modeRows,
);

say('One completed run, from its history:');
say();
table(
  ['workflow', 'workflow tasks', 'regular activities (host queue)', 'local activities', 'upserts', 'events', 'bytes'],
  ['envrun', 'bare_shape', 'floor', 'bare_regular'].flatMap((name) => {
    const sh = r.shape[name];
    if (!sh) return [];
    const c = sh.counts.total;
    return [[name, c.workflowTasks, `${c.regular} (${c.regularHost})`, c.local, c.upserts, sh.events, sh.bytes]];
  }),
);
if (r.shape.mismatches.length) (say(`Shape mismatches: ${r.shape.mismatches.join('; ')}`), say());

say(`Worker memory: RssAnon after a full GC, MB (workflow cache ${s.maxCachedWorkflows} runs):`);
say();
table(
  ['runs held at ready', 'envrun worker', 'bare_shape worker'],
  [
    ['0 (fresh)', v(r.memory.idle.envrun?.rssAnonMb), v(r.memory.idle.bare_shape?.rssAnonMb)],
    ...r.memory.held.map((h) => [h.held.toLocaleString('en'), v(h.envrunRssAnonMb), v(h.bareShapeRssAnonMb)]),
  ],
);
const ev = r.evicted;
say(
  `Completing a held run one at a time (worker cache ${s.evict.cache}, ${s.evict.held} held), p50 ms: ` +
    `evicted (replayed) envrun ${v(ev.envrun?.evictedCompleteP50Ms)}, bare_shape ${v(ev.bare_shape?.evictedCompleteP50Ms)}; ` +
    `cached envrun ${v(ev.envrun?.cachedCompleteP50Ms)}, bare_shape ${v(ev.bare_shape?.cachedCompleteP50Ms)}.`,
);
say();
say(
  `Sandbox (bubblewrap) start request → first output, c=1: p50 ${v(r.summary.sandbox_first_output_p50_ms, ' ms')}, p99 ` +
    `${v(r.summary.sandbox_first_output_p99_ms, ' ms')} (start→ready ${v(r.summary.sandbox_start_to_ready_p50_ms, ' ms')} + ` +
    `exec ${v(r.summary.sandbox_exec_p50_ms, ' ms')}; the exec API answers when the command ends). Public figures for ` +
    `comparison: Daytona ~110 ms create→first command, E2B ~440 ms.`,
);
say();
say('Targets:');
say();
table(
  ['target', 'measured', 'limit', 'result'],
  r.targets.map((t) => [
    t.target,
    v(t.measured),
    t.limit,
    t.pass === null ? 'not measured' : t.pass ? 'pass' : '**fail**',
  ]),
);
const c = r.cluster;
if (c) {
  const cs = c.settings;
  const load = (l: string) => l.split(' ').slice(0, 3).join(' ');
  say('Production engine (`npm run bench -- --engine cluster`):');
  say();
  say(
    `${c.startedAt.slice(0, 10)}, ${c.engine.server} (${c.engine.historyShards} history shards, four service ` +
      `processes) on ${c.engine.persistence}; load average ${load(c.machine.loadAvgAtStart)} at start, ` +
      `${load(c.machine.loadAvgAtEnd)} at the end; ${cs.reps} interleaved repetitions, ${cs.runsC1} runs per mode ` +
      `at c=1 and ${cs.runsC50} at c=${cs.concurrency} in each; envrun's worker from ${cs.envrunWorkerRuntime}; ` +
      `${c.durationS} s in all.`,
  );
  say();
  const pg = (mode: string) => {
    const p = c.postgresPerRun?.[mode];
    if (!p) return '—';
    const db = (d: string) => `${v(p[d]?.transactions)} (${v(p[d]?.rowsWritten)})`;
    return `${db('temporal')} / ${db('temporal_visibility')} / ${db('envrun')}`;
  };
  table(
    [
      'mode',
      'c=1 p50 ms',
      'c=1 p99 ms',
      'c=1 complete p50 ms',
      `c=${cs.concurrency} runs/s`,
      `c=${cs.concurrency} CPU ms/run: worker / Temporal / PostgreSQL / client`,
      'PostgreSQL transactions (rows written) per run, c=1: temporal / visibility / envrun',
    ],
    ['floor', 'bare_shape', 'envrun'].map((mode) => {
      const one = c.modes[`${mode}@1`];
      const many = c.modes[`${mode}@${cs.concurrency}`];
      const cpu = many?.cpu;
      return [
        mode,
        spread(one?.p50),
        v(one?.pooledP99),
        v(one?.completeP50),
        spread(many?.runsPerS),
        cpu ? `${cpu.worker} / ${cpu.server} / ${cpu.postgres} / ${cpu.client}` : '—',
        pg(mode),
      ];
    }),
  );
  say(
    `envrun / bare_shape: c=1 p50 ${v(r.summary.cluster_envrun_vs_bare_shape_c1_p50, '×')}, c=${cs.concurrency} ` +
      `throughput ${v(r.summary.cluster_envrun_vs_bare_shape_c50_throughput, '×')} (on the dev server ` +
      `${v(r.summary.envrun_vs_bare_shape_c1_p50, '×')} and ${v(r.summary.envrun_vs_bare_shape_c50_throughput, '×')}).`,
  );
  say();
}
console.log(out.join('\n').trimEnd());
