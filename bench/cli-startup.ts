// `npm run bench:cli`: how long `envrun --help` takes against a bare `node -e 0`, measured pair by pair (each
// pair runs both back to back, so a busy moment of the machine weighs on both alike). Prints the median, min
// and max wall time and CPU time of each, and the median of the pairs' ratios. The CLI runs from dist/
// (`npm run build`, which the npm script runs first).
//   node --import tsx bench/cli-startup.ts [--pairs 15] [-- ARGS...]   (ARGS: the CLI's arguments, default --help)
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/envrun.mjs', import.meta.url));
const { values, positionals } = parseArgs({
  options: { pairs: { type: 'string', default: '15' } },
  allowPositionals: true,
});
const pairs = Number(values.pairs);
if (!Number.isInteger(pairs) || pairs < 1)
  throw new Error(`--pairs: must be a whole number above 0, not ${values.pairs}`);
const cliArgs = positionals.length ? positionals : ['--help'];
if (!existsSync(new URL('../dist/client/cli/index.js', import.meta.url)))
  throw new Error('dist/ is missing: run `npm run build` first (npm run bench:cli does)');

/** CPU time of this process's waited-for children so far, in ms (/proc/self/stat cutime + cstime). */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[13]) + Number(fields[14]);
  return ticks * 10; // USER_HZ is 100 on Linux
}

interface Sample {
  wallMs: number;
  cpuMs: number;
}

function time(args: string[]): Sample {
  const cpu = childrenCpuMs();
  const start = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited with ${r.status}: ${r.stderr.toString()}`);
  return { wallMs, cpuMs: childrenCpuMs() - cpu };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const spread = (xs: number[]) =>
  `median ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`;

// One of each first, unmeasured: the files are in the page cache for every pair alike.
time(['-e', '0']);
time([BIN, ...cliArgs]);
const cli: Sample[] = [];
const bare: Sample[] = [];
for (let i = 0; i < pairs; i++) {
  // Alternate which goes first, so neither always runs right after the other.
  if (i % 2) {
    bare.push(time(['-e', '0']));
    cli.push(time([BIN, ...cliArgs]));
  } else {
    cli.push(time([BIN, ...cliArgs]));
    bare.push(time(['-e', '0']));
  }
}
const ratios = cli.map((c, i) => c.wallMs / bare[i]!.wallMs);
console.log(`${pairs} pairs, node ${process.version}`);
console.log(`envrun ${cliArgs.join(' ')}:`.padEnd(24), 'wall', spread(cli.map((s) => s.wallMs)));
console.log(''.padEnd(24), 'cpu ', spread(cli.map((s) => s.cpuMs)));
console.log('node -e 0:'.padEnd(24), 'wall', spread(bare.map((s) => s.wallMs)));
console.log(''.padEnd(24), 'cpu ', spread(bare.map((s) => s.cpuMs)));
console.log(
  `ratio (per pair, wall): median ${median(ratios).toFixed(2)}× (min ${Math.min(...ratios).toFixed(2)}, max ${Math.max(...ratios).toFixed(2)})`,
);
