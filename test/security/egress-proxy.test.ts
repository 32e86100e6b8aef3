// The egress proxy (drivers/egress/proxy.ts) in this process, on real unix sockets, in front of local HTTP and
// HTTPS servers (their own CA) and a permissive CONNECT relay. Each attack is first shown to work without
// the proxy (straight to the servers), then refused through it: an unlisted host, an unlisted IP literal, a
// listed name that resolves to a private address (also among public ones), DNS rebinding, a CONNECT inside a
// tunnel, a Host that differs from the tunnel's or the URL's host, a TLS SNI that differs from the tunnel's.
// Hostile bytes never stop it, and every connection ends in one event with its bytes and reason.
import 'reflect-metadata'; // before @peculiar/x509
import { createHash, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEgressRule } from '../../contracts/egress.js';
import { isPublicAddress } from '../../drivers/egress/policy.js';
import {
  createEgressProxy,
  type EgressEvent,
  type EgressProxy,
  type EgressRoute,
  type InterceptTarget,
} from '../../drivers/egress/proxy.js';
import { egressResolution } from '../../drivers/egress/resolve.js';

const dir = mkdtempSync(join(tmpdir(), 'envrun-egress-'));
const events: EgressEvent[] = [];
const lookups: string[] = [];
let rebindCalls = 0;
let proxy: EgressProxy;
let plainProxy: EgressProxy;
let intercepted: { target: InterceptTarget; routeId: string }[] = [];

let web: Server;
let tlsWeb: Server;
let relay: Server;
let WEB = 0;
let TLS = 0;
let RELAY = 0;
let CLOSED = 0;
let caPem = '';
const sock = join(dir, 'main.sock');
const plainSock = join(dir, 'plain.sock');
const BIG = 4 * 1024 * 1024;
/** Random bytes: a read buffer reused too early would show as a wrong hash (a constant body would not). */
const RANDOM = randomBytes(6 * 1024 * 1024);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function route(id: string, allow: string[], extra: Partial<EgressRoute> = {}): EgressRoute {
  return {
    id,
    companyId: 'co',
    heartbeatRunId: 'run',
    leaseId: 'lease',
    phase: 'run',
    rules: allow.map(parseEgressRule),
    inject: [],
    ca: null,
    ...extra,
  };
}

/** A CA, and a leaf for a.test and b.test signed by it (ECDSA P-256). */
async function makeCerts(): Promise<{ ca: string; cert: string; key: string }> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 3_600_000);
  const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=egress test CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const leafKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=a.test',
    issuer: ca.subject,
    notBefore,
    notAfter,
    signingKey: caKeys.privateKey,
    publicKey: leafKeys.publicKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'a.test' },
        { type: 'dns', value: 'b.test' },
      ]),
    ],
  });
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey));
  const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' });
  return { ca: ca.toString('pem'), cert: leaf.toString('pem'), key: key.toString() };
}

const listen = (server: Server | ReturnType<typeof createNetServer>) =>
  new Promise<number>((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );

beforeAll(async () => {
  // The origin: answers with what it saw; a virtual host `secret.test` that only a Host header reaches.
  web = createHttpServer((req, res) => {
    if (req.headers.host === 'secret.test') return res.end('SECRET');
    if (req.url === '/random') {
      res.writeHead(200, { 'content-length': RANDOM.length });
      return res.end(RANDOM);
    }
    if (req.url === '/big') {
      res.writeHead(200, { 'content-length': BIG });
      return res.end(Buffer.alloc(BIG, 7));
    }
    let body = 0;
    req.on('data', (c: Buffer) => (body += c.length));
    req.on('end', () =>
      res.end(
        JSON.stringify({
          host: req.headers.host,
          url: req.url,
          method: req.method,
          body,
          proxyAuth: req.headers['proxy-authorization'] ?? null,
        }),
      ),
    );
  });
  const certs = await makeCerts();
  caPem = certs.ca;
  tlsWeb = createHttpsServer({ cert: certs.cert, key: certs.key }, (req, res) => {
    const servername = (req.socket as { servername?: string }).servername;
    res.end(servername === 'b.test' ? 'B-ONLY' : `tls ${servername} ${req.headers.host}`);
  });
  // A permissive proxy: relays a CONNECT anywhere (what a nested CONNECT would reach).
  relay = createHttpServer();
  relay.on('connect', (req, client: Socket, head: Buffer) => {
    const [h, p] = (req.url ?? '').split(':');
    const up = netConnect(Number(p), h!, () => {
      client.write('HTTP/1.1 200 OK\r\n\r\n');
      up.write(head);
      up.pipe(client).on('error', () => {});
      client.pipe(up).on('error', () => {});
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  WEB = await listen(web);
  TLS = await listen(tlsWeb);
  RELAY = await listen(relay);
  const closed = createNetServer();
  CLOSED = await listen(closed);
  await new Promise((r) => closed.close(r));

  const test = egressResolution({
    ENVRUN_EGRESS_TEST_RESOLVE: JSON.stringify({
      hosts: {
        'a.test': ['127.0.0.1'],
        'b.test': ['127.0.0.1'],
        'relay.test': ['127.0.0.1'],
        'x.wild.test': ['127.0.0.1'],
        'private.test': ['10.20.30.40'],
        'metadata.test': ['169.254.169.254'],
        'mixed.test': ['127.0.0.1', '192.168.1.1'],
        'mapped.test': ['::ffff:169.254.169.254'],
      },
      public: ['127.0.0.1'],
    }),
  });
  proxy = createEgressProxy({
    resolve: async (host) => {
      lookups.push(host);
      if (host === 'rebind.test')
        return rebindCalls++ === 0 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '127.0.0.2', family: 4 }];
      return test.resolve(host);
    },
    isPublic: test.isPublic,
    headerTimeoutMs: 1_000,
    intercept: (client, target, r, count) => {
      intercepted.push({ target, routeId: r.id });
      client.on('error', () => {});
      client.once('data', (chunk: Buffer) => {
        count(chunk.length, 5);
        client.end('hello');
      });
    },
    onEvent: (e) => events.push(e),
  });
  await proxy.listen(
    route('main', [
      `a.test:${WEB}`,
      `a.test:${TLS}`,
      `relay.test:${RELAY}`,
      `*.wild.test:${WEB}`,
      `private.test:${WEB}`,
      `metadata.test:80`,
      `mixed.test:${WEB}`,
      `mapped.test:${WEB}`,
      `rebind.test:${WEB}`,
      `nowhere.invalid:${WEB}`,
      `127.0.0.1:${WEB}`,
      `127.0.0.1:${CLOSED}`,
      `127.0.0.1:3128`,
      `inject.test:443`,
    ]),
    sock,
  );
  // The system's resolver and public rule, as in production.
  const plain = egressResolution({});
  plainProxy = createEgressProxy({ ...plain, onEvent: (e) => events.push(e) });
  await plainProxy.listen(route('plain', [`localhost:${WEB}`, `127.0.0.1:${WEB}`]), plainSock);
});

afterAll(async () => {
  await proxy?.close();
  await plainProxy?.close();
  for (const s of [web, tlsWeb, relay]) s?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Connected {
  status: number;
  head: string;
  socket: Socket;
}

/** Sends `CONNECT authority` over the proxy's socket; resolves with the reply's status line and the socket. */
function connectVia(path: string, authority: string): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    let buf = Buffer.alloc(0);
    socket.on('error', reject);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      const rest = buf.subarray(end + 4);
      if (rest.length > 0) socket.unshift(rest);
      const head = buf.subarray(0, end).toString();
      resolve({ status: Number(head.split(' ')[1]), head, socket });
    };
    socket.on('data', onData);
    socket.on('end', () => reject(new Error(`closed before a reply: ${buf.toString()}`)));
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

/** Everything the socket sends until it closes (or errors). */
function readAll(socket: Socket, first = ''): Promise<string> {
  return new Promise((resolve) => {
    let text = first;
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (text += c));
    socket.on('error', () => resolve(text));
    socket.on('close', () => resolve(text));
    socket.resume();
  });
}

/** A raw exchange inside a tunnel (or straight to a server): write, then read until the peer closes. */
async function exchange(socket: Socket, request: string): Promise<string> {
  socket.write(request);
  return readAll(socket);
}

/** An absolute-form request over the proxy's socket. */
function httpVia(
  path: string,
  url: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        socketPath: path,
        path: url,
        method: body ? 'POST' : 'GET',
        headers: { host: u.host, ...headers },
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** An HTTPS GET inside a tunnel (or on a plain TCP socket), with the test CA and the given SNI. */
function httpsOver(socket: Socket, servername: string, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const tls = tlsConnect({ socket, servername, ca: caPem });
    tls.on('error', reject);
    tls.on('secureConnect', () => tls.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
    let text = '';
    tls.setEncoding('utf8');
    tls.on('data', (c: string) => (text += c));
    tls.on('close', () => resolve(text));
  });
}

async function until<T>(find: () => T | undefined, ms = 5_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const eventFor = (host: string, port: number, since: number, verdict?: 'allowed' | 'denied') =>
  until(() =>
    events
      .slice(since)
      .find((e) => e.host === host && e.port === port && (verdict === undefined || e.verdict === verdict)),
  );

const direct = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });

describe('allowed', () => {
  it('a listed name through CONNECT (HTTP and HTTPS) and through absolute-form HTTP', async () => {
    const at = events.length;
    const c = await connectVia(sock, `a.test:${WEB}`);
    expect(c.status).toBe(200);
    const reply = await exchange(c.socket, `GET /t HTTP/1.1\r\nHost: a.test:${WEB}\r\nConnection: close\r\n\r\n`);
    expect(reply).toContain(`"host":"a.test:${WEB}"`);
    const e = await eventFor('a.test', WEB, at, 'allowed');
    expect(e).toMatchObject({ routeId: 'main', phase: 'run', verdict: 'allowed' });
    expect(e.reason).toBeUndefined();
    expect(e.bytesUp).toBeGreaterThan(30);
    expect(e.bytesDown).toBeGreaterThan(30);

    const t = await connectVia(sock, `a.test:${TLS}`);
    expect(t.status).toBe(200);
    expect(await httpsOver(t.socket, 'a.test', 'a.test')).toContain('tls a.test a.test');

    const r = await httpVia(sock, `http://a.test:${WEB}/p?q=1`, { 'proxy-authorization': 'Basic eDp5' }, 'body!');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({
      host: `a.test:${WEB}`,
      url: '/p?q=1',
      method: 'POST',
      body: 5,
      proxyAuth: null,
    });
  });

  it('a wildcard rule covers subdomains only', async () => {
    expect((await httpVia(sock, `http://x.wild.test:${WEB}/`)).status).toBe(200);
    const r = await httpVia(sock, `http://wild.test:${WEB}/`);
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/^egress denied \(not_listed\)/);
  });

  it('a listed IP literal; the proxy reaches 127.0.0.1 only because a rule lists it literally', async () => {
    expect((await connectVia(sock, `127.0.0.1:${WEB}`)).status).toBe(200);
    expect((await httpVia(sock, `http://127.0.0.1:${WEB}/`)).status).toBe(200);
    expect((await httpVia(plainSock, `http://127.0.0.1:${WEB}/`)).status).toBe(200);
  });

  it('tunnels pass every byte in order: concurrent downloads, some read slowly, all hash right', async () => {
    /** One tunnel's body; a slow reader pauses its socket now and then (the proxy must wait, not drop). */
    const download = async (slow: boolean): Promise<Buffer> => {
      const c = await connectVia(sock, `127.0.0.1:${WEB}`);
      c.socket.write(`GET /random HTTP/1.1\r\nHost: 127.0.0.1:${WEB}\r\nConnection: close\r\n\r\n`);
      const chunks: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        let n = 0;
        c.socket.on('data', (d: Buffer) => {
          chunks.push(d);
          if (slow && ++n % 8 === 0) {
            c.socket.pause();
            setTimeout(() => c.socket.resume(), 5);
          }
        });
        c.socket.on('end', resolve);
        c.socket.on('error', reject);
        c.socket.resume();
      });
      const all = Buffer.concat(chunks);
      return all.subarray(all.indexOf('\r\n\r\n') + 4);
    };
    const at = events.length;
    const bodies = await Promise.all([false, true, false, true, false, true].map(download));
    for (const body of bodies) {
      expect(body.length).toBe(RANDOM.length);
      expect(sha(body)).toBe(sha(RANDOM));
    }
    // Each tunnel's event, with every byte it passed down (and nothing left to land in the next test's).
    const mine = await until(() => {
      const got = events.slice(at).filter((e) => e.port === WEB && e.bytesDown > RANDOM.length);
      return got.length === bodies.length ? got : undefined;
    });
    expect(mine).toHaveLength(bodies.length);
  });

  it('counts the bytes of a download', async () => {
    const at = events.length;
    const c = await connectVia(sock, `127.0.0.1:${WEB}`);
    c.socket.write(`GET /big HTTP/1.1\r\nHost: 127.0.0.1:${WEB}\r\nConnection: close\r\n\r\n`);
    const text = await readAll(c.socket);
    expect(text.length).toBeGreaterThan(BIG);
    const e = await eventFor('127.0.0.1', WEB, at, 'allowed');
    expect(e.bytesDown).toBeGreaterThan(BIG);
    expect(e.bytesDown).toBeLessThan(BIG + 1_000);

    const at2 = events.length;
    const r = await httpVia(sock, `http://127.0.0.1:${WEB}/big`);
    expect(r.body.length).toBe(BIG);
    expect((await eventFor('127.0.0.1', WEB, at2, 'allowed')).bytesDown).toBeGreaterThan(BIG);
  });

  it('a target with an inject rule goes to the interceptor, with the address the proxy checked', async () => {
    const injectSock = join(dir, 'inject.sock');
    const inject = [{ host: 'A.test', port: TLS, header: 'x-token', value: 'Bearer s', secret: 's' }];
    await proxy.listen({ ...route('inject', [`a.test:${TLS}`, `a.test:${WEB}`]), inject }, injectSock);
    try {
      const at = events.length;
      intercepted = [];
      const c = await connectVia(injectSock, `a.test:${TLS}`);
      expect(c.status).toBe(200);
      expect(await exchange(c.socket, 'ping')).toBe('hello');
      expect(intercepted).toEqual([
        { target: { host: 'a.test', port: TLS, address: '127.0.0.1', family: 4 }, routeId: 'inject' },
      ]);
      expect(await eventFor('a.test', TLS, at, 'allowed')).toMatchObject({
        routeId: 'inject',
        bytesUp: 4,
        bytesDown: 5,
      });
      // Another port of the same host is a plain tunnel.
      const plain = await connectVia(injectSock, `a.test:${WEB}`);
      expect(await exchange(plain.socket, `GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`)).toContain(
        '"host":"a.test"',
      );
      expect(intercepted).toHaveLength(1);
    } finally {
      await proxy.unlisten('inject');
    }
  });
});

/** A 403 (or other) refusal of a CONNECT: its status and reason line. */
async function refusedConnect(path: string, authority: string): Promise<{ status: number; body: string }> {
  const c = await connectVia(path, authority);
  return { status: c.status, body: await readAll(c.socket) };
}

describe('refused', () => {
  it('an unlisted name, through CONNECT and absolute-form, with a reason line and an event', async () => {
    const at = events.length;
    const c = await refusedConnect(sock, `b.test:${WEB}`);
    expect(c.status).toBe(403);
    expect(c.body).toBe(`egress denied (not_listed) b.test:${WEB}: no rule of this phase lists it\n`);
    const r = await httpVia(sock, `http://b.test:${WEB}/`);
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/^egress denied \(not_listed\)/);
    expect(await eventFor('b.test', WEB, at, 'denied')).toMatchObject({
      reason: 'not_listed',
      bytesUp: 0,
      bytesDown: 0,
    });
    // A listed name on another port is not listed either.
    expect((await refusedConnect(sock, 'a.test:80')).status).toBe(403);
    expect(lookups).not.toContain('b.test'); // refused before any lookup
  });

  it('an IP literal no rule lists literally (the metadata address, another port, the mapped form)', async () => {
    // Without the proxy, these are reachable.
    (await direct(TLS)).destroy();
    for (const authority of [`127.0.0.1:${TLS}`, '169.254.169.254:80', `[::ffff:127.0.0.1]:${WEB}`, `[::1]:${WEB}`]) {
      const c = await refusedConnect(sock, authority);
      expect(c.status, authority).toBe(403);
      expect(c.body, authority).toMatch(/^egress denied \(ip_not_listed\)/);
    }
    expect((await httpVia(sock, `http://127.0.0.1:${TLS}/`)).status).toBe(403);
  });

  it('a listed name that resolves to a private address, or to a public and a private one', async () => {
    for (const name of ['private.test', 'mixed.test', 'mapped.test']) {
      const c = await refusedConnect(sock, `${name}:${WEB}`);
      expect(c.status, name).toBe(403);
      expect(c.body, name).toMatch(/^egress denied \(private_address\)/);
    }
    expect((await refusedConnect(sock, 'metadata.test:80')).body).toMatch(/private_address/);
    expect((await httpVia(sock, `http://mixed.test:${WEB}/`)).body).toMatch(/private_address/);
    // With the system's resolver and no test setting, `localhost` is loopback: refused, though listed.
    const at = events.length;
    const l = await refusedConnect(plainSock, `localhost:${WEB}`);
    expect(l.status).toBe(403);
    expect(l.body).toMatch(/^egress denied \(private_address\) localhost/);
    expect(await eventFor('localhost', WEB, at)).toMatchObject({
      routeId: 'plain',
      verdict: 'denied',
      reason: 'private_address',
    });
    expect(isPublicAddress('127.0.0.1')).toBe(false);
  });

  it('DNS rebinding: one lookup per connection, and the connection goes to the address checked', async () => {
    const before = lookups.filter((h) => h === 'rebind.test').length;
    const c = await connectVia(sock, `rebind.test:${WEB}`);
    expect(c.status).toBe(200);
    const reply = await exchange(c.socket, `GET / HTTP/1.1\r\nHost: rebind.test\r\nConnection: close\r\n\r\n`);
    expect(reply).toContain('"host":"rebind.test"');
    expect(lookups.filter((h) => h === 'rebind.test').length - before).toBe(1);
    // The name now answers a loopback address the proxy does not count as public: the next connection is refused.
    expect((await refusedConnect(sock, `rebind.test:${WEB}`)).body).toMatch(/private_address/);
    expect((await httpVia(sock, `http://rebind.test:${WEB}/`)).status).toBe(403);
    expect(lookups.filter((h) => h === 'rebind.test').length - before).toBe(3);
  });

  it('a name that does not resolve; an upstream that refuses (502)', async () => {
    expect((await refusedConnect(sock, `nowhere.invalid:${WEB}`)).body).toMatch(/^egress denied \(resolve_failed\)/);
    const at = events.length;
    const c = await refusedConnect(sock, `127.0.0.1:${CLOSED}`);
    expect(c.status).toBe(502);
    expect(await eventFor('127.0.0.1', CLOSED, at)).toMatchObject({ verdict: 'allowed', reason: 'upstream_failed' });
    expect((await httpVia(sock, `http://127.0.0.1:${CLOSED}/`)).status).toBe(502);
  });

  it('a CONNECT inside a tunnel (to a relay that would pass it on), and a CONNECT to the proxy itself', async () => {
    // Without the proxy: the relay takes the nested CONNECT to the origin's secret virtual host.
    const d = await direct(RELAY);
    d.write(`CONNECT 127.0.0.1:${WEB} HTTP/1.1\r\n\r\n`);
    await new Promise((r) => d.once('data', r));
    expect(await exchange(d, 'GET / HTTP/1.1\r\nHost: secret.test\r\nConnection: close\r\n\r\n')).toContain('SECRET');

    const at = events.length;
    const c = await connectVia(sock, `relay.test:${RELAY}`);
    expect(c.status).toBe(200);
    const reply = await exchange(c.socket, `CONNECT 127.0.0.1:${WEB} HTTP/1.1\r\nHost: relay.test:${RELAY}\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(reply).toContain('egress denied (nested_connect)');
    expect(reply).not.toContain('SECRET');
    expect(await eventFor('relay.test', RELAY, at)).toMatchObject({
      verdict: 'denied',
      reason: 'nested_connect',
      bytesUp: 0,
    });
    // Lower-case, after blank lines: still a CONNECT.
    const c2 = await connectVia(sock, `relay.test:${RELAY}`);
    expect(await exchange(c2.socket, `\r\nconnect 127.0.0.1:${WEB} HTTP/1.1\r\n\r\n`)).toContain('nested_connect');
    // The relay port inside a sandbox is the proxy: never a target, even listed.
    expect((await refusedConnect(sock, '127.0.0.1:3128')).body).toMatch(/^egress denied \(nested_connect\)/);
  });

  it('a Host header that differs from the tunnel target, or from the URL', async () => {
    // Without the proxy: the Host header alone picks the secret virtual host.
    expect(
      await exchange(await direct(WEB), 'GET / HTTP/1.1\r\nHost: secret.test\r\nConnection: close\r\n\r\n'),
    ).toContain('SECRET');
    const at = events.length;
    for (const request of [
      'GET / HTTP/1.1\r\nHost: secret.test\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: a.test:${WEB}\r\nHost: secret.test\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: a.test:1\r\n\r\n`,
      'GET http://secret.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n',
    ]) {
      const c = await connectVia(sock, `a.test:${WEB}`);
      const reply = await exchange(c.socket, request);
      expect(reply, request).toContain('egress denied (host_mismatch)');
      expect(reply, request).not.toContain('SECRET');
    }
    expect(await eventFor('a.test', WEB, at, 'denied')).toMatchObject({ reason: 'host_mismatch' });
    // Absolute-form: the Host header must name the URL's host.
    const r = await httpVia(sock, `http://a.test:${WEB}/`, { host: 'secret.test' });
    expect(r.status).toBe(403);
    expect(r.body).toMatch(/^egress denied \(host_mismatch\)/);
    expect(r.body).not.toContain('SECRET');
  });

  it('a TLS SNI that differs from the tunnel target', async () => {
    // Without the proxy: SNI b.test reaches what only b.test serves.
    expect(await httpsOver(await direct(TLS), 'b.test', 'b.test')).toContain('B-ONLY');
    const at = events.length;
    const c = await connectVia(sock, `a.test:${TLS}`);
    expect(c.status).toBe(200);
    await expect(httpsOver(c.socket, 'b.test', 'b.test')).rejects.toThrow();
    expect(await eventFor('a.test', TLS, at, 'denied')).toMatchObject({ reason: 'sni_mismatch', bytesUp: 0 });
  });

  it('cuts the connections of a route whose rules change, and refuses what the new rules do not list', async () => {
    const phaseSock = join(dir, 'phase.sock');
    await proxy.listen(route('phase', [`a.test:${WEB}`]), phaseSock);
    try {
      const open = await connectVia(phaseSock, `a.test:${WEB}`);
      const closed = readAll(open.socket);
      proxy.update({ ...route('phase', [`127.0.0.1:${WEB}`]), phase: 'run' });
      await closed; // cut
      expect((await refusedConnect(phaseSock, `a.test:${WEB}`)).body).toMatch(/not_listed/);
      expect((await connectVia(phaseSock, `127.0.0.1:${WEB}`)).status).toBe(200);
      // The same rules again keep open connections.
      const kept = await connectVia(phaseSock, `127.0.0.1:${WEB}`);
      proxy.update(route('phase', [`127.0.0.1:${WEB}`]));
      expect(await exchange(kept.socket, 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')).toContain(
        '200 OK',
      );
    } finally {
      await proxy.unlisten('phase');
    }
    await expect(connectVia(phaseSock, `127.0.0.1:${WEB}`)).rejects.toThrow();
  });
});

describe('hostile input', () => {
  /** Sends raw bytes on the proxy's socket and waits for the proxy to close it (or 2 s). */
  const raw = (bytes: Buffer | string, path = sock) =>
    new Promise<string>((resolve) => {
      const s = netConnect(path);
      let text = '';
      const done = () => resolve(text);
      s.setTimeout(3_000, () => s.destroy());
      s.on('data', (c: Buffer) => (text += c.toString('latin1')));
      s.on('error', done);
      s.on('close', done);
      s.write(bytes, () => s.end());
    });

  it('malformed requests get a 400 and the proxy keeps serving', async () => {
    for (const bytes of [
      'GARBAGE\r\n\r\n',
      'CONNECT a.test HTTP/1.1\r\n\r\n',
      'CONNECT :443 HTTP/1.1\r\n\r\n',
      'CONNECT a.test:99999 HTTP/1.1\r\n\r\n',
      'CONNECT [::1 HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n',
      'GET https://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n',
      `GET http://user@a.test:${WEB}/ HTTP/1.1\r\nHost: a.test\r\n\r\n`,
      `GET http://a.test:${WEB}/ HTTP/1.1\r\nHost: a.test\r\nX: ${'a'.repeat(40_000)}\r\n\r\n`,
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]),
    ]) {
      const reply = await raw(bytes);
      expect(reply, String(bytes).slice(0, 60)).toMatch(/^HTTP\/1\.1 (400|403|431)/);
    }
    expect((await httpVia(sock, `http://a.test:${WEB}/`)).status).toBe(200);
  });

  it('random bytes on the socket and inside tunnels, clients that vanish mid-way, heads that never end', async () => {
    let seed = 42;
    const rand = () => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed;
    };
    const randomBytes = () => Buffer.from(Array.from({ length: 1 + (rand() % 400) }, () => rand() & 0xff));
    const hello = Buffer.from([0x16, 0x03, 0x01]);
    await Promise.all(Array.from({ length: 40 }, () => raw(randomBytes())));
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const c = await connectVia(sock, `a.test:${i % 2 ? TLS : WEB}`);
        c.socket.on('error', () => {});
        const bytes = i % 3 === 0 ? Buffer.concat([hello, randomBytes()]) : randomBytes();
        if (i % 5 === 0) c.socket.write(bytes.subarray(0, 3), () => c.socket.destroy());
        else {
          c.socket.write(bytes);
          if (i % 2) c.socket.end();
          await readAll(c.socket);
        }
      }),
    );
    // A client that starts a request head and stops: cut after the header timeout (1 s here).
    const started = Date.now();
    const slow = await connectVia(sock, `a.test:${WEB}`);
    slow.socket.write('GET / HTTP/1.1\r\nHost: a.t');
    await readAll(slow.socket);
    expect(Date.now() - started).toBeLessThan(5_000);
    const slowHead = netConnect(sock);
    slowHead.on('error', () => {});
    slowHead.write('GET http://a.test/ HTTP/1.1\r\n');
    await readAll(slowHead);
    // An upgrade request in absolute form (no WebSocket proxying here): answered or closed, never a crash.
    await raw(
      `GET http://a.test:${WEB}/ HTTP/1.1\r\nHost: a.test:${WEB}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    // A client gone while its name is being looked up, or while the upstream answers.
    const gone = netConnect(sock);
    gone.on('error', () => {});
    gone.write(`CONNECT a.test:${WEB} HTTP/1.1\r\n\r\n`, () => gone.destroy());
    const big = httpRequest({ socketPath: sock, path: `http://a.test:${WEB}/big`, headers: { host: `a.test:${WEB}` } });
    big.on('response', (res) => res.once('data', () => big.destroy()));
    big.on('error', () => {});
    big.end();
    await new Promise((r) => setTimeout(r, 200));
    // Still serving.
    const c = await connectVia(sock, `a.test:${TLS}`);
    expect(await httpsOver(c.socket, 'a.test', 'a.test')).toContain('tls a.test');
    expect((await httpVia(sock, `http://a.test:${WEB}/`)).status).toBe(200);
  });
});
