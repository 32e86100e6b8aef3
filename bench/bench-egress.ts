// `npm run bench:egress`: what the egress proxy costs a sandbox. Real bubblewrap sandboxes (as root, with
// slirp4netns) download from an HTTP server of this process on the host's own non-loopback address: with
// `network: "outbound"` (slirp4netns, the baseline) and with `network: "allowlist"` (the relay inside, the
// unix socket, the worker's proxy process), the address listed literally. Interleaved repetitions of:
// - a 100 MB download with curl (through the proxy: a CONNECT tunnel, as every HTTPS download is);
// - 50 connections one after the other, each timed from the first connect to the first byte of a small
//   response (through the proxy: connect to the relay, CONNECT, 200, the request).
// Prints figures and ratios, and merges `egress_download_vs_outbound` and `egress_connect_added_p50_ms`
// into bench/results/latest.json.
import { createServer, type Server } from 'node:http';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { bwrapUnavailable, createBubblewrapProvider, findSlirp4netns } from '../drivers/providers/bubblewrap/index.js';
import type { LeaseCallContext, SandboxProvider } from '../drivers/providers/contract.js';
import { createEgressSupervisor } from '../drivers/egress/supervisor.js';
import { benchCallContext, benchTarget, median, mergeIntoLatest, r1, r2 } from './bench-proc.js';

const REPS = Math.max(1, Number(process.env.BENCH_REPS ?? 5));
const DOWNLOAD_BYTES = Number(process.env.BENCH_EGRESS_BYTES ?? 100 * 1024 * 1024);
const CONNECTIONS = 50;
const log = (line: string) => console.log(`[bench:egress] ${line}`);

/** The host's first non-internal IPv4 address: what slirp4netns reaches (its loopback is not). */
function hostAddress(): string | null {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

/** `/big`: DOWNLOAD_BYTES from a 1 MiB buffer; anything else: two bytes. */
function startServer(): Promise<{ server: Server; port: number }> {
  const chunk = Buffer.alloc(1024 * 1024, 'x');
  const server = createServer((req, res) => {
    if (req.url !== '/big') return void res.end('ok');
    res.writeHead(200, { 'content-length': String(DOWNLOAD_BYTES) });
    let left = DOWNLOAD_BYTES;
    const more = () => {
      while (left > 0) {
        const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= part.length;
        if (!res.write(part)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  server.keepAliveTimeout = 1000;
  return new Promise((resolve) =>
    server.listen(0, '0.0.0.0', () => resolve({ server, port: (server.address() as { port: number }).port })),
  );
}

/**
 * The connection timer, run by node inside the sandbox: `direct` connects to the server, `proxy` to the
 * relay then CONNECTs. Prints each connection's ms to the first byte of the response, one per line.
 */
const CONNECT_SCRIPT = `
const net = require('net');
const [mode, host, port, n] = process.argv.slice(1);
const one = () => new Promise((resolve, reject) => {
  const t = process.hrtime.bigint();
  const s = mode === 'proxy' ? net.connect(3128, '127.0.0.1') : net.connect(Number(port), host);
  s.setNoDelay(true);
  let tunnel = mode !== 'proxy';
  let got = '';
  const ask = () => s.write('GET /small HTTP/1.1\\r\\nHost: ' + host + ':' + port + '\\r\\nConnection: close\\r\\n\\r\\n');
  s.on('connect', () => (tunnel ? ask() : s.write('CONNECT ' + host + ':' + port + ' HTTP/1.1\\r\\nHost: ' + host + ':' + port + '\\r\\n\\r\\n')));
  s.on('data', (d) => {
    if (!tunnel) {
      got += d.toString('latin1');
      if (!got.includes('\\r\\n\\r\\n')) return;
      if (!/^HTTP\\/1\\.[01] 200/.test(got)) return reject(new Error('CONNECT refused: ' + got.split('\\r\\n')[0]));
      tunnel = true;
      return ask();
    }
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    s.destroy();
    resolve(ms);
  });
  s.on('error', reject);
});
(async () => { for (let i = 0; i < Number(n); i++) console.log((await one()).toFixed(3)); })()
  .catch((e) => { console.error(e.message); process.exit(1); });
`;

async function main(): Promise<void> {
  const reason =
    process.getuid?.() !== 0
      ? 'not root'
      : (bwrapUnavailable() ?? (findSlirp4netns() ? null : 'slirp4netns is not installed (the outbound baseline)'));
  const address = hostAddress();
  if (reason || !address) {
    log(`skipped: ${reason ?? 'no non-loopback IPv4 address on this host'}`);
    return;
  }
  const { server, port } = await startServer();
  const root = mkdtempSync(join(tmpdir(), 'envrun-bench-egress-'));
  chmodSync(root, 0o711); // the sandbox uid passes through to its workspace
  const egress = createEgressSupervisor({ parentDir: root });
  const provider: SandboxProvider<any> = createBubblewrapProvider({ rootDir: join(root, 'sandboxes'), egress });
  const target = `${address}:${port}`;
  const configs = {
    outbound: (await provider.validateConfig({ provider: 'bubblewrap', network: 'outbound' })).config,
    allowlist: (
      await provider.validateConfig({ provider: 'bubblewrap', network: 'allowlist', egress: { allow: [target] } })
    ).config,
  };
  const base = benchCallContext('bench-egress');
  const leases: Record<string, LeaseCallContext> = {};
  for (const mode of ['outbound', 'allowlist'] as const) {
    const lease = await provider.acquireLease(configs[mode], {
      ...base,
      heartbeatRunId: `bench-egress-${mode}`,
      idempotencyKey: mode,
      reuseKey: null,
    });
    leases[mode] = { ...base, heartbeatRunId: `bench-egress-${mode}`, leaseId: mode, lease };
  }
  const run = async (mode: 'outbound' | 'allowlist', command: string, args: string[]) => {
    const r = await provider.execute(configs[mode], leases[mode]!, {
      command,
      args,
      env: {},
      timeoutMs: 300_000,
      phase: 'run',
    });
    if (r.exitCode !== 0) throw new Error(`${mode}: ${command} exited ${r.exitCode}: ${r.stderr.slice(0, 300)}`);
    return r.stdout;
  };
  /** MB/s of one 100 MB download. */
  const download = async (mode: 'outbound' | 'allowlist') => {
    const out = await run(mode, 'curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{size_download} %{time_total}',
      ...(mode === 'allowlist' ? ['--proxytunnel'] : []),
      `http://${target}/big`,
    ]);
    const [size, seconds] = out.trim().split(' ').map(Number) as [number, number];
    if (size !== DOWNLOAD_BYTES) throw new Error(`${mode}: downloaded ${size} bytes, not ${DOWNLOAD_BYTES}`);
    return size / 1024 / 1024 / seconds;
  };
  const connects = async (mode: 'outbound' | 'allowlist') => {
    const out = await run(mode, 'node', [
      '-e',
      CONNECT_SCRIPT,
      mode === 'allowlist' ? 'proxy' : 'direct',
      address,
      String(port),
      String(CONNECTIONS),
    ]);
    return out.trim().split('\n').map(Number);
  };

  const mbps: Record<'outbound' | 'allowlist', number[]> = { outbound: [], allowlist: [] };
  const connectMs: Record<'outbound' | 'allowlist', number[]> = { outbound: [], allowlist: [] };
  try {
    log(
      `server on ${target}; ${REPS} repetitions, ${DOWNLOAD_BYTES / 1024 / 1024} MB, ${CONNECTIONS} connections each`,
    );
    for (let rep = -1; rep < REPS; rep++) {
      // Alternating which goes first: neither always gets the warmer page cache or the quieter moment.
      const order = rep % 2 === 0 ? (['outbound', 'allowlist'] as const) : (['allowlist', 'outbound'] as const);
      const line: string[] = [];
      for (const mode of order) {
        const speed = await download(mode);
        const times = await connects(mode);
        line.push(`${mode} ${r1(speed)} MB/s, connect p50 ${r2(median(times))} ms`);
        if (rep < 0) continue; // warm-up
        mbps[mode].push(speed);
        connectMs[mode].push(...times);
      }
      log(`${rep < 0 ? 'warm-up' : `rep ${rep + 1}/${REPS}`}: ${line.join('; ')}`);
    }
  } finally {
    for (const mode of ['outbound', 'allowlist'] as const)
      await provider
        .releaseLease(configs[mode], { ...leases[mode]!, keep: false, cancelActiveWork: true, syncBackTo: null })
        .catch(() => undefined);
    await egress.stop();
    server.close();
    rmSync(root, { recursive: true, force: true });
  }

  const spread = (xs: number[]) => `${r1(median(xs))} (${r1(Math.min(...xs))}–${r1(Math.max(...xs))})`;
  const summary = {
    egress_download_outbound_mb_per_s: r1(median(mbps.outbound)),
    egress_download_allowlist_mb_per_s: r1(median(mbps.allowlist)),
    egress_download_vs_outbound: r2(median(mbps.allowlist) / median(mbps.outbound)),
    egress_connect_outbound_p50_ms: r2(median(connectMs.outbound)),
    egress_connect_allowlist_p50_ms: r2(median(connectMs.allowlist)),
    egress_connect_added_p50_ms: r2(median(connectMs.allowlist) - median(connectMs.outbound)),
  };
  console.log(`\n[bench:egress] ${REPS} repetitions; median (min–max)`);
  console.log(`  download, outbound:   ${spread(mbps.outbound)} MB/s`);
  console.log(`  download, allowlist:  ${spread(mbps.allowlist)} MB/s`);
  console.log(
    `  connect→first byte, outbound:  ${spread(connectMs.outbound)} ms (${connectMs.outbound.length} connections)`,
  );
  console.log(
    `  connect→first byte, allowlist: ${spread(connectMs.allowlist)} ms (${connectMs.allowlist.length} connections)`,
  );
  console.log(`\n[bench:egress] summary ${JSON.stringify(summary)}`);
  const targets = [
    benchTarget('egress download vs outbound ≥ 0.8×', summary.egress_download_vs_outbound, 0.8, '≥'),
    benchTarget('egress connection setup added p50 ≤ 5 ms', summary.egress_connect_added_p50_ms, 5, '≤'),
  ];
  console.log('\n| figure | measured | target | met |\n| --- | --- | --- | --- |');
  for (const t of targets) console.log(`| ${t.target} | ${t.measured} | ${t.limit} | ${t.pass ? 'yes' : 'NO'} |`);
  const written = mergeIntoLatest(summary, targets, 'egress ');
  if (written) log(`merged into ${written}`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
