// Summarises V8 CPU profiles (`BENCH_PROFILE=<dir> npm run bench` writes the envrun worker's, one per
// thread): busy time by package and the hottest functions. `npx tsx bench/profile-summary.ts <dir>`.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function packageOf(url: string, fn: string): string {
  if (url.includes('node_modules/')) return url.replace(/.*node_modules\/((@[^/]+\/)?[^/]+).*/, '$1');
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  if (url.startsWith('file://'))
    return `envrun ${url.replace(/^file:\/\/.*?\/(contracts|workflows|activities|worker|client|scripts)\//, '$1/')}`.split(
      '/',
    )[0]!;
  return url ? url.split(/[/:]/)[0]! : `(${fn})`;
}

const dir = process.argv[2];
if (!dir) {
  console.error('usage: profile-summary <dir of .cpuprofile files>');
  process.exit(2);
}
for (const file of readdirSync(dir)
  .filter((f) => f.endsWith('.cpuprofile'))
  .sort()) {
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const { functionName, url, lineNumber } = nodes.get(id)!.callFrame;
    if (functionName === '(idle)') return;
    const us = profile.timeDeltas[i] ?? 0;
    busy += us;
    const pkg = packageOf(url, functionName);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
    const key = `${functionName || '(anonymous)'} ${url.replace(/.*node_modules\//, '')}:${lineNumber}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  });
  const top = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(
        ([k, us]) => `  ${(us / 1000).toFixed(0).padStart(7)} ms ${((us / busy) * 100).toFixed(1).padStart(5)}%  ${k}`,
      )
      .join('\n');
  console.log(
    `\n${file}: busy ${(busy / 1000).toFixed(0)} ms\n${top(byPackage, 12)}\n  -- hottest functions\n${top(byFunction, 12)}`,
  );
}
