// The worker's egress proxy process (drivers/egress/supervisor.ts) seen from its audit and its host: a sandbox
// that tries many hosts cannot grow the audit without bound; refusals inside a tunnel (plain or intercepted)
// reach the audit with their reason; inject upstreams are verified against OpenSSL's trust store (the proxy
// runs with --use-openssl-ca; here SSL_CERT_FILE names a store holding only the test upstream's CA); the socket
// folders a crashed worker left are removed at the next start, and nothing a link points at.
import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EgressAuditRow } from '../../contracts/egress.js';
import { AUDIT_KEYS_PER_ROUTE, createAuditAggregator, OVERFLOW_HOST } from '../../drivers/egress/audit.js';
import { createLeaseCa, leafFor } from '../../drivers/egress/ca.js';
import { createEgressSupervisor, removeStaleBases, type EgressSupervisor } from '../../drivers/egress/supervisor.js';

const INJECT_HOST = 'api.inject.test';
const SECRET_VAR = 'ENVRUN_EGRESS_SUPERVISOR_TEST_SECRET';
const SECRET = `ghp_${randomBytes(20).toString('hex')}`;

const dir = mkdtempSync(join(tmpdir(), 'egress-supervisor-'));
chmodSync(dir, 0o755); // the proxy runs as another uid when the tests run as root: it reads the CA file
const caFile = join(dir, 'upstream-ca.pem');

// Before the proxy process starts: it answers INJECT_HOST with 127.0.0.1 and counts 127.0.0.1 as public.
process.env.ENVRUN_EGRESS_TEST_RESOLVE = JSON.stringify({
  hosts: { [INJECT_HOST]: ['127.0.0.1'] },
  public: ['127.0.0.1'],
});
process.env[SECRET_VAR] = SECRET;

let web: http.Server;
let webPort: number;
let upstream: https.Server;
let upstreamPort: number;
let upstreamCaPem: string;
const seenAuth: (string | undefined)[] = [];
let supervisor: EgressSupervisor;
const audit: EgressAuditRow[] = [];

const listen = (server: net.Server) =>
  new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );

beforeAll(async () => {
  web = http.createServer((req, res) => res.end(`HELLO ${req.headers.host}\n`));
  webPort = await listen(web);
  const upstreamCa = await createLeaseCa([INJECT_HOST]);
  upstreamCaPem = upstreamCa.certPem;
  writeFileSync(caFile, upstreamCaPem, { mode: 0o644 });
  const leaf = await leafFor(upstreamCa, INJECT_HOST);
  upstream = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
    seenAuth.push(req.headers.authorization);
    res.end('UPSTREAM\n');
  });
  upstreamPort = await listen(upstream);
  // No upstreamCaPem: the proxy trusts the upstream only through the OpenSSL store SSL_CERT_FILE names.
  process.env.SSL_CERT_FILE = caFile;
  supervisor = createEgressSupervisor({
    auditIntervalMs: 50,
    auditKeysPerRoute: 8,
    onAudit: (rows) => void audit.push(...rows),
  });
});

afterAll(async () => {
  delete process.env.SSL_CERT_FILE;
  await supervisor?.stop();
  web?.close();
  upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function openRoute(allow: string[], inject = false) {
  const leaseId = `lease-${randomUUID().slice(0, 8)}`;
  const { socketDir, caCertPem } = await supervisor.open({
    providerLeaseId: leaseId,
    leaseId,
    companyId: 'co',
    heartbeatRunId: 'run',
    environmentId: 'env',
    phase: 'run',
    egress: {
      allow,
      inject: inject
        ? [
            {
              host: INJECT_HOST,
              port: upstreamPort,
              header: 'authorization',
              value: 'Bearer {secret}',
              secret: `env:${SECRET_VAR}`,
            },
          ]
        : [],
    },
  });
  return { leaseId, socket: join(socketDir, 's'), caCertPem };
}

/** A CONNECT through the route's socket; resolves with the socket and the proxy's answer head. */
function connectThrough(socketPath: string, authority: string): Promise<{ socket: net.Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath, () =>
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`),
    );
    let got = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      const rest = got.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ socket, head: got.subarray(0, end).toString('latin1') });
    };
    socket.on('data', onData);
    socket.on('error', reject);
  });
}

/** Writes `text` on `socket` and collects all it reads back until it closes. */
function exchange(socket: net.Socket | tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
    socket.write(text);
    setTimeout(() => socket.destroy(), 5_000).unref();
  });
}

/** TLS over a tunnel, trusting only the lease CA. */
function tlsOver(socket: net.Socket, caPem: string, servername = INJECT_HOST): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, servername, ca: [caPem] }, () => resolve(t));
    t.once('error', reject);
  });
}

async function waitFor<T>(what: () => T | undefined, ms = 10_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = what();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const rowsOf = (leaseId: string) => audit.filter((r) => r.leaseId === leaseId);
const sum = (rows: EgressAuditRow[]) => rows.reduce((n, r) => n + r.connections, 0);
/** The rows as the store keeps them: one per phase, host, port, verdict and reason, summed over flushes. */
const storedRowsOf = (leaseId: string) => {
  const byKey = new Map<string, EgressAuditRow>();
  for (const r of rowsOf(leaseId)) {
    const key = JSON.stringify([r.phase, r.host, r.port, r.verdict, r.reason]);
    const was = byKey.get(key);
    byKey.set(key, was ? { ...was, connections: was.connections + r.connections } : { ...r });
  }
  return [...byKey.values()];
};

describe('egress audit aggregation', () => {
  it('keeps at most AUDIT_KEYS_PER_ROUTE keys per route and sums the rest into host * with its reason', () => {
    const agg = createAuditAggregator();
    const meta = { companyId: 'co', heartbeatRunId: 'run', leaseId: 'l', environmentId: 'e', phase: 'run' as const };
    agg.route('r1', meta);
    agg.route('r2', { ...meta, leaseId: 'l2' });
    const ev = (routeId: string, host: string, reason: 'not_listed' | 'private_address', bytes = 0) => ({
      routeId,
      phase: 'run' as const,
      host,
      port: 443,
      verdict: 'denied' as const,
      reason,
      bytesUp: bytes,
      bytesDown: bytes,
      at: Date.now(),
    });
    for (let i = 0; i < AUDIT_KEYS_PER_ROUTE + 100; i++)
      expect(agg.record(ev('r1', `h${i}.test`, 'not_listed', 1))).toBe(true);
    const first = agg.take();
    expect(first).toHaveLength(AUDIT_KEYS_PER_ROUTE + 1);
    const overflow = first.filter((r) => r.host === OVERFLOW_HOST);
    expect(overflow).toEqual([
      expect.objectContaining({ port: 0, reason: 'not_listed', connections: 100, bytesUp: 100 }),
    ]);
    expect(sum(first)).toBe(AUDIT_KEYS_PER_ROUTE + 100);
    // Across takes the route keeps its keys: a known host still gets its own row, a new one (any reason) goes to *.
    agg.record(ev('r1', 'h0.test', 'not_listed'));
    agg.record(ev('r1', 'new.test', 'private_address'));
    agg.record(ev('r1', 'new2.test', 'private_address'));
    // Another route has its own keys.
    agg.record(ev('r2', 'new.test', 'private_address'));
    const second = agg.take();
    expect(second).toHaveLength(3);
    expect(second).toContainEqual(expect.objectContaining({ leaseId: 'l', host: 'h0.test', connections: 1 }));
    expect(second).toContainEqual(
      expect.objectContaining({ leaseId: 'l', host: OVERFLOW_HOST, reason: 'private_address', connections: 2 }),
    );
    expect(second).toContainEqual(expect.objectContaining({ leaseId: 'l2', host: 'new.test', connections: 1 }));
    // A reason envrun does not know (a proxy process that was made to lie) is recorded as bad_request.
    agg.record(ev('r2', 'new.test', 'made-up' as never));
    expect(agg.take()).toEqual([expect.objectContaining({ host: 'new.test', reason: 'bad_request', connections: 1 })]);
    // A forgotten route's events are not counted.
    agg.forget('r2');
    expect(agg.record(ev('r2', 'x.test', 'not_listed'))).toBe(false);
    expect(agg.pending).toBe(0);
  });

  it('a sandbox trying many hosts through the proxy makes a bounded number of rows, totals right', async () => {
    const { leaseId, socket } = await openRoute([]);
    for (let i = 0; i < 20; i++) {
      const { head } = await connectThrough(socket, `host${i}.example:443`);
      expect(head).toMatch(/^HTTP\/1\.1 403/);
    }
    await waitFor(() => (sum(rowsOf(leaseId)) >= 20 ? true : undefined));
    // The aggregator may flush a key twice (a busy machine splits the burst): the store sums them.
    const rows = storedRowsOf(leaseId);
    expect(new Set(rows.filter((r) => r.host !== OVERFLOW_HOST).map((r) => r.host)).size).toBe(8);
    expect(rows.filter((r) => r.host === OVERFLOW_HOST)).toEqual([
      expect.objectContaining({ port: 0, verdict: 'denied', reason: 'not_listed', connections: 12 }),
    ]);
    expect(sum(rows)).toBe(20);
    await supervisor.close(leaseId);
  });
});

describe("a route's socket", () => {
  /** What a process of `uid`/`gid` on the host gets when it connects to `socket`: 'connected' or the error code. */
  const connectAs = (socket: string, uid: number, gid: number) =>
    new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [
          '-e',
          `require('net').connect(${JSON.stringify(socket)}).on('connect', () => { console.log('connected'); process.exit(0); })` +
            `.on('error', (e) => { console.log(e.code); process.exit(0); })`,
        ],
        { uid, gid },
        (err, stdout) => (err ? reject(err) : resolve(stdout.trim())),
      ),
    );

  it.skipIf(process.getuid?.() !== 0)(
    'is reached by the sandbox uid, not by another host user who learned its path (mountinfo shows it)',
    async () => {
      const { leaseId, socket } = await openRoute([]);
      expect(await connectAs(socket, 65534, 65534)).toBe('connected'); // the sandboxes' uid and group
      expect(await connectAs(socket, 12345, 12345)).toBe('EACCES');
      await supervisor.close(leaseId);
    },
  );
});

describe('refusals inside tunnels reach the audit', () => {
  it('a plain tunnel whose request names another Host is a denied host_mismatch row', async () => {
    const { leaseId, socket } = await openRoute([`127.0.0.1:${webPort}`]);
    const ok = await connectThrough(socket, `127.0.0.1:${webPort}`);
    expect(ok.head).toMatch(/^HTTP\/1\.1 200/);
    expect(
      await exchange(ok.socket, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${webPort}\r\nConnection: close\r\n\r\n`),
    ).toContain('HELLO');
    const bad = await connectThrough(socket, `127.0.0.1:${webPort}`);
    const reply = await exchange(bad.socket, `GET / HTTP/1.1\r\nHost: other.example\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 403/);
    expect(reply).not.toContain('HELLO');
    const rows = await waitFor(() => {
      const r = rowsOf(leaseId);
      return r.some((x) => x.reason === 'host_mismatch') && r.some((x) => x.verdict === 'allowed') ? r : undefined;
    });
    expect(rows).toContainEqual(
      expect.objectContaining({
        host: '127.0.0.1',
        port: webPort,
        verdict: 'denied',
        reason: 'host_mismatch',
        connections: 1,
      }),
    );
    await supervisor.close(leaseId);
  });

  it('an intercepted tunnel: the upstream verified by the OpenSSL store; Host, nested CONNECT and SNI refusals audited', async () => {
    const { leaseId, socket, caCertPem } = await openRoute([`${INJECT_HOST}:${upstreamPort}`], true);
    expect(caCertPem).toBeTruthy();
    const authority = `${INJECT_HOST}:${upstreamPort}`;
    // Allowed: the header is added upstream; the upstream's CA is known only from SSL_CERT_FILE.
    const good = await connectThrough(socket, authority);
    const goodReply = await exchange(
      await tlsOver(good.socket, caCertPem!),
      `GET / HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`,
    );
    expect(goodReply).toMatch(/^HTTP\/1\.1 200/);
    expect(goodReply).toContain('UPSTREAM');
    expect(seenAuth).toContain(`Bearer ${SECRET}`);
    expect(goodReply).not.toContain(SECRET);
    const before = seenAuth.length;

    const host = await connectThrough(socket, authority);
    expect(
      await exchange(await tlsOver(host.socket, caCertPem!), `GET / HTTP/1.1\r\nHost: other.example\r\n\r\n`),
    ).toMatch(/^HTTP\/1\.1 403/);
    const nested = await connectThrough(socket, authority);
    expect(
      await exchange(
        await tlsOver(nested.socket, caCertPem!),
        `CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: ${authority}\r\n\r\n`,
      ),
    ).toMatch(/^HTTP\/1\.1 403/);
    const sni = await connectThrough(socket, authority);
    await expect(tlsOver(sni.socket, caCertPem!, 'other.example')).rejects.toThrow();
    expect(seenAuth.length).toBe(before);

    const rows = await waitFor(() => {
      const r = rowsOf(leaseId).filter((x) => x.verdict === 'denied');
      return r.length >= 3 ? r : undefined;
    });
    const reasons = rows.map((r) => r.reason).sort();
    expect(reasons).toEqual(['host_mismatch', 'nested_connect', 'sni_mismatch']);
    for (const r of rows) expect(r).toMatchObject({ host: INJECT_HOST, port: upstreamPort, connections: 1 });
    await supervisor.close(leaseId);
  });

  it('the proxy process runs with --use-openssl-ca, which is what makes SSL_CERT_FILE count', async () => {
    const pid = supervisor.proxyPid();
    expect(pid).not.toBeNull();
    expect(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')).toContain('--use-openssl-ca');
    // Without the flag node trusts only its bundled roots: the same store does not make the upstream trusted.
    const probe = (flags: string[]) =>
      new Promise<string>((resolve) =>
        execFile(
          process.execPath,
          [
            ...flags,
            '-e',
            `require('https').get({host:'127.0.0.1',port:${upstreamPort},servername:'${INJECT_HOST}',path:'/'},` +
              `(r)=>{console.log('ok');r.resume()}).on('error',(e)=>console.log(e.code))`,
          ],
          { env: { PATH: process.env.PATH, SSL_CERT_FILE: caFile } },
          (_err, out) => resolve(out.trim()),
        ),
      );
    expect(await probe([])).not.toBe('ok');
    expect(await probe(['--use-openssl-ca'])).toBe('ok');
  });
});

describe('socket folders left by a crashed worker', () => {
  it('removes the stale base folders of ended workers of this uid, and follows no link', async () => {
    const parent = mkdtempSync(join(dir, 'parent-'));
    chmodSync(parent, 0o755);
    const deadPid = await new Promise<number>((resolve) => {
      const p = spawn(process.execPath, ['-e', '0']);
      p.on('exit', () => resolve(p.pid!));
    });
    const outside = mkdtempSync(join(dir, 'outside-'));
    writeFileSync(join(outside, 'keep'), 'x');
    const stale = join(parent, `envrun-egress-${deadPid}-aB3dE9`);
    mkdirSync(join(stale, 'route'), { recursive: true });
    symlinkSync(outside, join(stale, 'route', 'link'));
    symlinkSync(join(outside, 'keep'), join(stale, 'file-link'));
    const live = join(parent, `envrun-egress-${process.pid}-aaaaaa`); // this worker's
    const pidOne = join(parent, `envrun-egress-1-bbbbbb`); // a live process
    const linked = join(parent, `envrun-egress-${deadPid}-cccccc`); // a link, not a folder
    const other = join(parent, `envrun-egress-other`); // not a base name
    for (const d of [live, pidOne, other]) mkdirSync(d);
    symlinkSync(outside, linked);
    let foreign: string | null = null;
    if (process.getuid?.() === 0) {
      foreign = join(parent, `envrun-egress-${deadPid}-dddddd`); // another uid's
      mkdirSync(foreign);
      chownSync(foreign, 65534, 65534);
    }

    // Through the supervisor's start: the first route makes the base folder after removing stale ones.
    const sup = createEgressSupervisor({ parentDir: parent });
    try {
      const leaseId = 'lease-stale';
      const { socketDir } = await sup.open({
        providerLeaseId: leaseId,
        leaseId,
        companyId: 'co',
        heartbeatRunId: 'run',
        environmentId: 'env',
        phase: 'run',
        egress: { allow: [], inject: [] },
      });
      expect(socketDir.startsWith(join(parent, `envrun-egress-${process.pid}-`))).toBe(true);
      expect(existsSync(stale)).toBe(false);
      for (const d of [live, pidOne, other, linked]) expect(existsSync(d)).toBe(true);
      if (foreign) expect(existsSync(foreign)).toBe(true);
      expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('x');
      // Nothing left to remove the second time; our own live base is not touched.
      expect(await removeStaleBases(parent)).toEqual([]);
      expect(existsSync(socketDir)).toBe(true);
    } finally {
      await sup.stop();
    }
  });
});
