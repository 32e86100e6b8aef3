// Attacks on `network: "allowlist"` from inside a real bubblewrap sandbox, through a real egress proxy process
// (drivers/egress/supervisor.ts): each way out is first shown to work under `outbound` (slirp4netns reaches a
// listener on the host's 0.0.0.0), then refused under `allowlist`. The servers are local: reached by IP
// literal rules, or by name through the test resolver (ENVRUN_EGRESS_TEST_RESOLVE, set before the proxy starts).
import { randomBytes, randomUUID } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { EgressConfig } from '../../contracts/egress.js';
import type { ExecResult } from '../../contracts/index.js';
import type { EgressAuditRow, EgressBroker } from '../../drivers/egress/broker.js';
import { createLeaseCa, leafFor } from '../../drivers/egress/ca.js';
import { createEgressSupervisor, type EgressSupervisor } from '../../drivers/egress/supervisor.js';
import type { CommandControl, SandboxProvider } from '../../drivers/providers/contract.js';
import { createFakeProvider } from '../../drivers/providers/fake.js';
import { ProviderRegistry } from '../../drivers/providers/load.js';
import { createSandboxDriver } from '../../drivers/sandbox.js';
import { callContext, hasBwrap, isRoot, sandboxProvider } from '../support/sandbox.js';

const INJECT_HOST = 'api.inject.test';
const NAMED_HOST = 'allowed.test';
const PRIVATE_NAME = 'rebind.test';
const SECRET_VAR = 'ENVRUN_EGRESS_TEST_SECRET_VALUE';
const SECRET = `ghp_${randomBytes(20).toString('hex')}`;

/** The host's first non-loopback IPv4 address: what `outbound` reaches of a 0.0.0.0 listener. */
function hostAddress(): string | null {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}
const HOST_IP = hostAddress();

// Before any proxy process starts: the proxy answers these names, and counts 127.0.0.1 as public (tests only).
process.env.ENVRUN_EGRESS_TEST_RESOLVE = JSON.stringify({
  hosts: { [NAMED_HOST]: ['127.0.0.1'], [INJECT_HOST]: ['127.0.0.1'], [PRIVATE_NAME]: ['10.0.0.1'] },
  public: ['127.0.0.1'],
});
process.env[SECRET_VAR] = SECRET;

let httpServer: http.Server;
let httpPort: number;
let otherServer: http.Server;
let otherPort: number;
let udp: dgram.Socket;
let udpPort: number;
const udpReceived: string[] = [];
let httpsServer: https.Server;
let httpsPort: number;
const injectSeen: (string | undefined)[] = [];
let upstreamCaPem: string;

const audit: EgressAuditRow[] = [];
let supervisor: EgressSupervisor;
const cleanups: (() => Promise<unknown>)[] = [];

async function listen(server: http.Server | https.Server, host: string): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  httpServer = http.createServer((req, res) => res.end(`HELLO ${req.url}\n`));
  httpPort = await listen(httpServer, '0.0.0.0');
  otherServer = http.createServer((req, res) => res.end(`OTHER ${req.url}\n`));
  otherPort = await listen(otherServer, '0.0.0.0');
  udp = dgram.createSocket('udp4');
  udp.on('message', (m) => udpReceived.push(m.toString()));
  await new Promise<void>((resolve) => udp.bind(0, '0.0.0.0', resolve));
  udpPort = udp.address().port;
  // The inject upstream: its own CA, a certificate for INJECT_HOST; it echoes the Authorization it got.
  const upstreamCa = await createLeaseCa([INJECT_HOST]);
  upstreamCaPem = upstreamCa.certPem;
  const leaf = await leafFor(upstreamCa, INJECT_HOST);
  httpsServer = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
    injectSeen.push(req.headers.authorization);
    res.setHeader('x-echo', String(req.headers.authorization));
    res.end(`ECHO ${String(req.headers.authorization)}\n`);
  });
  httpsPort = await listen(httpsServer, '127.0.0.1');
  supervisor = createEgressSupervisor({
    upstreamCaPem,
    auditIntervalMs: 100,
    onAudit: (rows) => void audit.push(...rows),
  });
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await supervisor?.stop();
  for (const s of [httpServer, otherServer, httpsServer]) s?.close();
  udp?.close();
});

interface Box {
  provider: SandboxProvider<Record<string, unknown>>;
  hostWorkspace: string;
  sh(
    script: string,
    options?: { phase?: 'provision' | 'run'; timeoutMs?: number; onStarted?: (c: CommandControl) => void },
  ): Promise<ExecResult>;
}

async function openBox(
  network: 'none' | 'outbound' | 'allowlist',
  egress?: Partial<EgressConfig>,
  broker: EgressBroker = supervisor,
): Promise<Box> {
  const provider = await sandboxProvider({ egress: broker });
  const { config } = await provider.validateConfig({ provider: 'bubblewrap', network, ...(egress ? { egress } : {}) });
  const ctx = callContext(`run-${randomUUID().slice(0, 8)}`);
  const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
  const local = mkdtempSync(join(inject('tmpRoot'), 'egress-local-'));
  await provider.realizeWorkspace(config, { ...ctx, lease, localPath: local });
  cleanups.push(() =>
    provider.releaseLease(config, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null }),
  );
  return {
    provider,
    hostWorkspace: join(String(lease.metadata.root), 'workspace'),
    sh: (script, o = {}) =>
      provider.execute(
        config,
        { ...ctx, lease },
        {
          command: 'bash',
          args: ['-c', script],
          env: {},
          timeoutMs: o.timeoutMs ?? 30_000,
          phase: o.phase ?? 'run',
          ...(o.onStarted ? { onStarted: o.onStarted } : {}),
        },
      ),
  };
}

/** Shell lines, each printing `<NAME> OK` only when its way out worked. */
const tcpProbe = (name: string, host: string, port: number) =>
  `timeout 5 bash -c 'echo > /dev/tcp/${host}/${port}' 2>/dev/null && echo "${name} OK"`;
const curlDirect = (name: string, url: string) =>
  `curl -sS -m 5 --noproxy '*' ${url} 2>&1 | grep -q HELLO && echo "${name} OK"`;
const udpProbe = (name: string, host: string, port: number) =>
  `for i in 1 2 3; do echo ${name} > /dev/udp/${host}/${port} 2>/dev/null && echo "${name} SENT"; sleep 0.1; done`;
/** ICMP echo: a ping socket, else a raw one (python's socket module: no ping installed). */
const icmpProbe = (name: string, host: string) =>
  `/usr/bin/python3 - <<'EOF'
import socket, struct
def echo(kind):
    s = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
    s.settimeout(3)
    pkt = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'envrun'
    csum = 0
    for i in range(0, len(pkt), 2):
        csum += (pkt[i] << 8) + (pkt[i + 1] if i + 1 < len(pkt) else 0)
    csum = (csum >> 16) + (csum & 0xffff); csum = ~(csum + (csum >> 16)) & 0xffff
    pkt = pkt[:2] + struct.pack('!H', csum) + pkt[4:]
    s.sendto(pkt, ('${host}', 0))
    s.recvfrom(1024)
for kind, label in ((socket.SOCK_DGRAM, 'ping socket'), (socket.SOCK_RAW, 'raw socket')):
    try:
        echo(kind); print('${name} OK via ' + label)
    except Exception as e:
        print('${name} failed via %s: %s' % (label, e))
EOF`;

const skip = !hasBwrap() || !isRoot() || HOST_IP === null;

describe.skipIf(skip)('bubblewrap sandbox: network "allowlist" (egress proxy)', () => {
  it('outbound first: TCP, HTTP and UDP to a listener on the host reach it (the attacks work there)', async () => {
    const box = await openBox('outbound');
    udpReceived.length = 0;
    const res = await box.sh(
      [
        tcpProbe('TCP', HOST_IP!, httpPort),
        curlDirect('HTTP', `http://${HOST_IP}:${httpPort}/direct`),
        udpProbe('UDP-OUTBOUND', HOST_IP!, udpPort),
        icmpProbe('ICMP', HOST_IP!),
      ].join('\n'),
    );
    expect(res.stdout, JSON.stringify(res)).toContain('TCP OK');
    expect(res.stdout).toContain('HTTP OK');
    await new Promise((r) => setTimeout(r, 300));
    expect(udpReceived.some((m) => m.includes('UDP-OUTBOUND'))).toBe(true);
    // ICMP: slirp4netns would relay an echo, but no sandbox can open either socket (no CAP_NET_RAW, and its
    // namespace's ping_group_range is empty): already refused under outbound, asserted under allowlist too.
    expect(res.stdout).toMatch(/ICMP failed via ping socket/);
    expect(res.stdout).toMatch(/ICMP failed via raw socket/);
  });

  it('allowlist: a listed host is reached through the proxy (HTTP_PROXY), by IP literal and by name', async () => {
    const box = await openBox('allowlist', { allow: [`127.0.0.1:${httpPort}`, `${NAMED_HOST}:${httpPort}`] });
    const res = await box.sh(
      [
        'env | grep -i _proxy= | sort',
        `curl -sS -m 10 http://127.0.0.1:${httpPort}/literal`,
        `curl -sS -m 10 http://${NAMED_HOST}:${httpPort}/named`,
      ].join('\n'),
    );
    expect(res.exitCode, JSON.stringify(res)).toBe(0);
    expect(res.stdout).toContain('HELLO /literal');
    expect(res.stdout).toContain('HELLO /named');
    for (const v of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'])
      expect(res.stdout).toContain(`${v}=http://127.0.0.1:3128`);
    expect(res.stdout).toMatch(/^NO_PROXY=$/m);
    expect(res.stdout).toMatch(/^no_proxy=$/m);
  });

  it('allowlist: unlisted hosts, ports and private names are refused; raw TCP, UDP, ICMP and DNS go nowhere', async () => {
    const box = await openBox('allowlist', { allow: [`127.0.0.1:${httpPort}`, `${PRIVATE_NAME}:${httpPort}`] });
    udpReceived.length = 0;
    const res = await box.sh(
      [
        `curl -sS -m 10 -o /dev/null -w 'UNLISTED-PORT %{http_code}\\n' http://127.0.0.1:${otherPort}/`,
        `curl -sS -m 10 -o /dev/null -w 'UNLISTED-IP %{http_code}\\n' http://${HOST_IP}:${httpPort}/`,
        `curl -sS -m 10 -o /dev/null -w 'PRIVATE-NAME %{http_code}\\n' http://${PRIVATE_NAME}:${httpPort}/`,
        `curl -sS -m 10 -o /dev/null -w 'CONNECT-UNLISTED %{http_code}\\n' -p http://127.0.0.1:${otherPort}/`,
        tcpProbe('TCP', HOST_IP!, httpPort),
        tcpProbe('TCP-LOOPBACK', '127.0.0.1', httpPort),
        curlDirect('HTTP', `http://${HOST_IP}:${httpPort}/direct`),
        udpProbe('UDP-ALLOWLIST', HOST_IP!, udpPort),
        icmpProbe('ICMP', HOST_IP!),
        `getent hosts example.com && echo "DNS OK"`,
        'cat /etc/resolv.conf',
      ].join('\n'),
    );
    const out = res.stdout;
    expect(out, JSON.stringify(res)).toContain('UNLISTED-PORT 403');
    expect(out).toContain('UNLISTED-IP 403');
    expect(out).toContain('PRIVATE-NAME 403');
    expect(out).toMatch(/CONNECT-UNLISTED (403|000)/);
    expect(out).not.toMatch(/ OK\b/);
    expect(out).not.toContain('UDP-ALLOWLIST SENT'); // no route: the datagram is not even sent
    expect(out).toMatch(/ICMP failed via ping socket/);
    expect(out).toMatch(/ICMP failed via raw socket/);
    expect(out).not.toContain('nameserver');
    await new Promise((r) => setTimeout(r, 300));
    expect(udpReceived).toEqual([]);
    await expect
      .poll(() => audit.filter((r) => r.verdict === 'denied').map((r) => `${r.host}:${r.port} ${r.reason}`))
      .toEqual(
        expect.arrayContaining([
          `127.0.0.1:${otherPort} ip_not_listed`,
          `${HOST_IP}:${httpPort} ip_not_listed`,
          `${PRIVATE_NAME}:${httpPort} private_address`,
        ]),
      );
  });

  it('phases: what provision may reach, run may not', async () => {
    const box = await openBox('allowlist', { provision: { allow: [`127.0.0.1:${httpPort}`] }, run: { allow: [] } });
    const get = `curl -sS -m 10 -w '\\nCODE %{http_code}\\n' http://127.0.0.1:${httpPort}/phase`;
    const provision = await box.sh(get, { phase: 'provision' });
    expect(provision.stdout, JSON.stringify(provision)).toContain('HELLO /phase');
    const run = await box.sh(get, { phase: 'run' });
    expect(run.stdout, JSON.stringify(run)).toContain('CODE 403');
    expect(run.stdout).not.toContain('HELLO');
    await expect
      .poll(() =>
        audit.filter((r) => r.host === '127.0.0.1' && r.port === httpPort).map((r) => `${r.phase} ${r.verdict}`),
      )
      .toEqual(expect.arrayContaining(['provision allowed', 'run denied']));
  });

  it('inject: the header reaches the upstream; the secret is nowhere in the sandbox', async () => {
    injectSeen.length = 0;
    const box = await openBox('allowlist', {
      allow: [`${INJECT_HOST}:${httpsPort}`],
      inject: [
        {
          host: INJECT_HOST,
          port: httpsPort,
          header: 'authorization',
          value: 'Bearer {secret}',
          secret: `env:${SECRET_VAR}`,
        },
      ],
    });
    const res = await box.sh(
      [
        `curl -sS -m 15 -D /tmp/headers -o /workspace/body https://${INJECT_HOST}:${httpsPort}/echo; echo "CURL $?"`,
        // node honours no proxy variable: a CONNECT by hand, then TLS trusting NODE_EXTRA_CA_CERTS.
        `cat > /tmp/get.js <<'EOF'
const http = require('http'), https = require('https'), tls = require('tls');
http.request({ host: '127.0.0.1', port: 3128, method: 'CONNECT', path: '${INJECT_HOST}:${httpsPort}' })
  .on('connect', (res, socket) => {
    const createConnection = () => tls.connect({ socket, servername: '${INJECT_HOST}' });
    https.get({ host: '${INJECT_HOST}', port: ${httpsPort}, path: '/node', createConnection }, (r) => r.pipe(process.stdout))
      .on('error', (e) => console.log('NODE-ERR', e.message));
  })
  .on('error', (e) => console.log('NODE-ERR', e.message))
  .end();
EOF
/run/envrun/node /tmp/get.js`,
        'echo ---; cat /tmp/headers /workspace/body',
        'echo ---; env',
        'echo ---; for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null | tr "\\0" "\\n"; done',
        'echo ---; find /workspace /tmp /run/envrun -type f -size -2M -exec cat {} + 2>/dev/null | tr -c "[:print:]\\n" "?"',
        'echo ---; grep -c "BEGIN CERTIFICATE" "$SSL_CERT_FILE"; head -c 100 /run/envrun/egress-ca.pem',
      ].join('\n'),
      { timeoutMs: 60_000 },
    );
    expect(res.stdout, JSON.stringify(res).slice(0, 4000)).toContain('CURL 0');
    expect(injectSeen).toContain(`Bearer ${SECRET}`); // the upstream got it (from curl, and from node)
    expect(injectSeen.filter((h) => h === `Bearer ${SECRET}`).length).toBeGreaterThanOrEqual(2);
    expect(res.stdout).toContain('ECHO '); // the echo came back, scrubbed
    expect(res.stdout).toContain('BEGIN CERTIFICATE');
    expect(`${res.stdout}\n${res.stderr}`).not.toContain(SECRET);
    expect(`${res.stdout}\n${res.stderr}`).not.toContain(SECRET.slice(4, 24));
    expect(audit.map((r) => JSON.stringify(r)).join('\n')).not.toContain(SECRET);
  });

  it('a proxy crash fails closed (no way around it), and the restarted proxy serves the running sandbox again', async () => {
    const opened: { socketDir: string }[] = [];
    const sup = createEgressSupervisor({ restartDelaysMs: [4000] });
    cleanups.push(() => sup.stop());
    const broker: EgressBroker = {
      open: async (input) => {
        const r = await sup.open(input);
        opened.push(r);
        return r;
      },
      close: (id) => sup.close(id),
      stop: () => sup.stop(),
    };
    const box = await openBox('allowlist', { allow: [`127.0.0.1:${httpPort}`] }, broker);
    const get = (tag: string) => `curl -sS -m 5 http://127.0.0.1:${httpPort}/${tag} 2>&1; echo " [${tag} $?]"`;
    const waitFor = (file: string) => `for i in $(seq 600); do [ -e /workspace/${file} ] && break; sleep 0.05; done`;
    const running = box.sh(
      [
        get('before'),
        'touch /workspace/phase1',
        waitFor('killed'),
        get('dead'),
        tcpProbe('TCP', HOST_IP!, httpPort),
        curlDirect('HTTP', `http://${HOST_IP}:${httpPort}/direct`),
        'touch /workspace/phase2',
        waitFor('restarted'),
        get('after'),
      ].join('\n'),
      { timeoutMs: 60_000 },
    );
    const until = async (what: () => boolean | Promise<boolean>, ms = 30_000) => {
      const end = Date.now() + ms;
      while (!(await what())) {
        if (Date.now() > end) throw new Error('timed out');
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    await until(() => existsSync(join(box.hostWorkspace, 'phase1')));
    const pid = sup.proxyPid()!;
    process.kill(pid, 'SIGKILL');
    await until(() => sup.proxyPid() === null);
    writeFileSync(join(box.hostWorkspace, 'killed'), '');
    await until(() => existsSync(join(box.hostWorkspace, 'phase2')));
    const socket = join(opened[0]!.socketDir, 's');
    const connects = () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(socket, () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
    await until(async () => sup.proxyPid() !== null && sup.proxyPid() !== pid && (await connects()));
    writeFileSync(join(box.hostWorkspace, 'restarted'), '');
    const res = await running;
    expect(res.stdout, JSON.stringify(res)).toContain('HELLO /before');
    expect(res.stdout).not.toContain('HELLO /dead');
    expect(res.stdout).toMatch(/\[dead [1-9]\d*\]/);
    expect(res.stdout).not.toMatch(/ OK\b/);
    expect(res.stdout).toContain('HELLO /after');
  });

  it("the relay changes nothing of the command's exit status, signals or timeout (as under none)", async () => {
    const none = await openBox('none');
    const allow = await openBox('allowlist', { allow: [] });
    const scenario = async (box: Box) => {
      const exit = await box.sh('echo out; echo err >&2; exit 7');
      const killed = await box.sh('sleep 30', { onStarted: (c) => setTimeout(() => c.kill('SIGTERM'), 300) });
      const trapped = await box.sh(`trap 'echo TERM; exit 3' TERM; sleep 30 & wait`, {
        onStarted: (c) => setTimeout(() => c.kill('SIGTERM'), 300),
      });
      const timedOut = await box.sh('sleep 30', { timeoutMs: 1000 });
      const pick = (r: ExecResult) => ({
        exitCode: r.exitCode,
        signal: r.signal,
        timedOut: r.timedOut,
        stdout: r.stdout,
        stderr: r.stderr,
      });
      return { exit: pick(exit), killed: pick(killed), trapped: pick(trapped), timedOut: pick(timedOut) };
    };
    const [a, b] = [await scenario(none), await scenario(allow)];
    expect(b).toEqual(a);
    expect(b.exit).toEqual({ exitCode: 7, signal: null, timedOut: false, stdout: 'out\n', stderr: 'err\n' });
    expect(b.trapped.stdout).toBe('TERM\n');
    expect(b.timedOut.timedOut).toBe(true);
  });

  it('50 sandboxes at once through one proxy', async () => {
    const boxes = await Promise.all(
      Array.from({ length: 50 }, () => openBox('allowlist', { allow: [`127.0.0.1:${httpPort}`] })),
    );
    const results = await Promise.all(
      boxes.map((box, i) => box.sh(`curl -sS -m 60 http://127.0.0.1:${httpPort}/box-${i}`, { timeoutMs: 120_000 })),
    );
    results.forEach((res, i) => expect(res.stdout, JSON.stringify(res)).toContain(`HELLO /box-${i}`));
  }, 300_000);

  it('config: egress needs network "allowlist"; a provider that cannot enforce it is refused, not ignored', async () => {
    const provider = await sandboxProvider({ egress: supervisor });
    await expect(
      provider.validateConfig({ provider: 'bubblewrap', network: 'outbound', egress: { allow: [] } }),
    ).rejects.toThrow('config.egress: applies only with network "allowlist"');
    const withoutProxy = await sandboxProvider();
    const { config } = await withoutProxy.validateConfig({ provider: 'bubblewrap', network: 'allowlist' });
    const probed = await withoutProxy.probe(config, { companyId: 'c', environmentId: 'e' });
    expect(probed.diagnostics).toContainEqual({
      severity: 'warning',
      message: expect.stringContaining('no egress proxy'),
    });
    const ctx = callContext('no-proxy');
    await expect(
      withoutProxy.acquireLease(config, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null }),
    ).rejects.toThrow("needs the worker's egress proxy");
    const driver = createSandboxDriver(
      new ProviderRegistry([createFakeProvider({ rootDir: mkdtempSync(join(inject('tmpRoot'), 'egress-fake-')) })]),
    );
    const environment = (config: Record<string, unknown>) =>
      ({ id: 'e', companyId: 'c', driver: 'sandbox', config: { provider: 'fake', ...config } }) as never;
    expect(driver.unsupportedReason!(environment({ network: 'allowlist' }))).toContain(
      'cannot enforce an egress allowlist',
    );
    expect(driver.unsupportedReason!(environment({ egress: { allow: [] } }))).toContain(
      'cannot enforce an egress allowlist',
    );
    expect(driver.unsupportedReason!(environment({}))).toBeNull();
  });
});
