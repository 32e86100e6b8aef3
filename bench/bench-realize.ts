// The bubblewrap upload (realizeWorkspace) of a 1,000-file workspace, in interleaved repetitions:
//  - full: into a fresh lease (no baseline: every file written, the tree chowned as root);
//  - full_again: into the same lease once its baseline is gone (what realizing a pooled sandbox cost
//    before uploads were incremental: every file rewritten, the whole tree, node_modules included, chowned);
//  - unchanged: realized again, nothing changed;
//  - changed_10: realized again after 10 files changed;
//  - touched_all: realized again after every file got a new modification time, content unchanged (a run's
//    workspace checked out apart from the pool's base): every file hashed, none written.
// The lease's workspace holds a node_modules of its own (as a provision command leaves it) from the
// second upload on. Median and spread (min–max) in ms, and the ratios against the full upload. Without
// bwrap the same copies run on plain folders (drivers/sync/incremental.ts), as the output says.
//
//   node --import tsx bench/bench-realize.ts [--reps 7] [--files 1000]
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { bwrapUnavailable, createBubblewrapProvider } from '../drivers/providers/bubblewrap/index.js';
import { copyInIncremental } from '../drivers/sync/incremental.js';
import { benchCallContext, median, r1, r2 } from './bench-proc.js';

export interface RealizeBenchResult {
  via: 'bubblewrap' | 'plain folders';
  reps: number;
  files: number;
  /** Per case: every repetition's ms. */
  ms: Record<Case, number[]>;
  summary: Record<string, number | string>;
}

const CASES = ['full', 'full_again', 'unchanged', 'changed_10', 'touched_all'] as const;
type Case = (typeof CASES)[number];
const NODE_MODULES_FILES = 2000;

const ctx = benchCallContext('bench-realize');

/** File `i` of a workspace of `files` files (20 a folder). */
const fileOf = (local: string, files: number, i: number) =>
  join(local, `src${i % Math.max(1, Math.round(files / 20))}`, `file${i}.ts`);

/** A workspace of `files` files (20 a folder, ~600 bytes each, like source files). */
function workspace(files: number): string {
  const local = mkdtempSync(join(tmpdir(), 'envrun-bench-realize-'));
  for (let i = 0; i < files; i++) {
    mkdirSync(dirname(fileOf(local, files, i)), { recursive: true });
    writeFileSync(fileOf(local, files, i), `export const value${i} = ${i};\n`.repeat(20));
  }
  return local;
}

/** What a provision command leaves in the workspace. */
function nodeModules(workspaceDir: string): void {
  for (let i = 0; i < NODE_MODULES_FILES; i++) {
    const dir = join(workspaceDir, 'node_modules', `pkg${i % 100}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i}.js`), 'module.exports = 1;\n');
  }
}

interface Target {
  /** The workspace folder (the sandbox's /workspace). */
  workspace: string;
  /** Uploads the local workspace into it. */
  realize(): Promise<void>;
  /** Deletes the upload baseline (the next upload is a full one). */
  forget(): void;
  close(): Promise<void>;
}

async function bubblewrapTargets(root: string, local: string): Promise<() => Promise<Target>> {
  const provider = createBubblewrapProvider({ rootDir: root });
  const { config } = await provider.validateConfig({ provider: 'bubblewrap' });
  return async () => {
    const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
    const leaseRoot = String(lease.metadata.root);
    return {
      workspace: join(leaseRoot, 'workspace'),
      realize: async () => {
        await provider.realizeWorkspace(config, { ...ctx, lease, localPath: local });
      },
      forget: () => rmSync(join(dirname(root), `.${basename(root)}-baselines`, `${basename(leaseRoot)}.json`)),
      close: async () => {
        await provider.releaseLease(config, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null });
      },
    };
  };
}

function plainTargets(root: string, local: string): () => Promise<Target> {
  return async () => {
    const workspaceDir = mkdtempSync(join(root, 'ws-'));
    const baseline = join(root, `${basename(workspaceDir)}.json`);
    return {
      workspace: workspaceDir,
      realize: async () => {
        await copyInIncremental(local, workspaceDir, { baseline });
      },
      forget: () => rmSync(baseline),
      close: async () => rmSync(workspaceDir, { recursive: true, force: true }),
    };
  };
}

export async function benchRealize(
  options: { reps?: number; files?: number; log?: (line: string) => void } = {},
): Promise<RealizeBenchResult> {
  const reps = options.reps ?? 7;
  const files = options.files ?? 1000;
  const log = options.log ?? ((line: string) => console.log(line));
  const root = join(mkdtempSync(join(tmpdir(), 'envrun-bench-realize-root-')), 'sandboxes');
  mkdirSync(root, { recursive: true });
  chmodSync(dirname(root), 0o755);
  chmodSync(root, 0o755);
  const local = workspace(files);
  const reason = bwrapUnavailable();
  const via = reason ? 'plain folders' : 'bubblewrap';
  if (reason) log(`bwrap unavailable (${reason}): measuring the copies on plain folders`);
  const target = reason ? plainTargets(root, local) : await bubblewrapTargets(root, local);
  const ms = Object.fromEntries(CASES.map((c) => [c, [] as number[]])) as Record<Case, number[]>;
  const time = async (c: Case, f: () => Promise<void>) => {
    const t = performance.now();
    await f();
    ms[c].push(performance.now() - t);
  };
  try {
    for (let rep = 0; rep < reps; rep++) {
      const t = await target();
      try {
        await time('full', t.realize);
        nodeModules(t.workspace);
        t.forget();
        await time('full_again', t.realize);
        await time('unchanged', t.realize);
        for (let i = 0; i < 10; i++)
          writeFileSync(fileOf(local, files, (rep * 10 + i * 97) % files), `// rep ${rep}\n`);
        await time('changed_10', t.realize);
        const now = Date.now() / 1000 + rep;
        for (let i = 0; i < files; i++) utimesSync(fileOf(local, files, i), now, now);
        await time('touched_all', t.realize);
      } finally {
        await t.close();
      }
    }
  } finally {
    rmSync(dirname(root), { recursive: true, force: true });
    rmSync(local, { recursive: true, force: true });
  }
  const spread = (xs: number[]) => `${r1(median(xs))} (${r1(Math.min(...xs))}–${r1(Math.max(...xs))})`;
  const full = median(ms.full);
  const summary: Record<string, number | string> = {
    realize_via: via,
    realize_files: files,
    realize_full_p50_ms: r1(full),
    realize_full_again_p50_ms: r1(median(ms.full_again)),
    realize_unchanged_p50_ms: r1(median(ms.unchanged)),
    realize_changed_10_p50_ms: r1(median(ms.changed_10)),
    realize_touched_all_p50_ms: r1(median(ms.touched_all)),
    realize_full_vs_unchanged: r1(full / median(ms.unchanged)),
    realize_full_vs_changed_10: r1(full / median(ms.changed_10)),
    realize_full_again_vs_unchanged: r1(median(ms.full_again) / median(ms.unchanged)),
  };
  log(`upload of a ${files}-file workspace via ${via}, ${reps} interleaved repetitions: median (min–max) ms`);
  for (const c of CASES) log(`  ${c.padEnd(11)} ${spread(ms[c])}`);
  log(
    `  full / unchanged ${r2(full / median(ms.unchanged))}×, full / changed_10 ${r2(full / median(ms.changed_10))}×, ` +
      `full_again / unchanged ${r2(median(ms.full_again) / median(ms.unchanged))}×`,
  );
  return { via, reps, files, ms, summary };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { reps: { type: 'string', default: '7' }, files: { type: 'string', default: '1000' } },
  });
  const reps = Number(values.reps);
  const files = Number(values.files);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer, not ${values.reps}`);
  if (!Number.isInteger(files) || files < 1) throw new Error(`--files must be a positive integer, not ${values.files}`);
  const result = await benchRealize({ reps, files });
  console.log(JSON.stringify(result.summary));
}
