// Credential brokering, attacked from the sandbox's side of the tunnel. The interceptor runs behind a unix
// socket the way the egress proxy hands it a tunnel after CONNECT; the client trusts only the lease CA. The
// upstream (its own CA) echoes the request's headers in its status line, a header and its body, plain or
// compressed: the injected header must reach it, and the secret must be nowhere in what the client reads.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLeaseCa, leafFor, type LeaseCa } from '../../drivers/egress/ca.js';
import { createInterceptor, type InterceptRoute, type InterceptTarget } from '../../drivers/egress/inject.js';

const HOST = 'api.example.test';
const SECRET = `ghp_${randomBytes(18).toString('hex')}`;
const VALUE = `Bearer ${SECRET}`;

interface Seen {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  raw: string[];
}

/** An HTTPS upstream that echoes what it got, in the ways a hostile or careless server might. */
async function upstream(cert: { certPem: string; keyPem: string }) {
  const seen: Seen[] = [];
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers, raw: req.rawHeaders });
    const auth = String(req.headers.authorization ?? '');
    const body = Buffer.from(JSON.stringify({ headers: req.headers, auth, secret: auth.slice(7) }));
    const echo = {
      'x-echo-auth': auth,
      'x-echo-secret': auth.slice(7),
      'x-echo-ae': String(req.headers['accept-encoding']),
    };
    if (req.url === '/gzip') {
      res.writeHead(200, auth, { ...echo, 'content-encoding': 'gzip' });
      res.end(zlib.gzipSync(body));
    } else if (req.url === '/br') {
      res.writeHead(200, { ...echo, 'content-encoding': 'br' });
      res.end(zlib.brotliCompressSync(body));
    } else if (req.url === '/zstd') {
      res.writeHead(200, { 'content-encoding': 'zstd' });
      res.end(body);
    } else if (req.url === '/drip') {
      // The secret one byte per write, so it crosses chunk boundaries.
      res.writeHead(200, { 'content-type': 'text/plain' });
      const text = `before ${auth} after`;
      let i = 0;
      const next = () => {
        if (i >= text.length) return res.end();
        res.write(text[i++]!, () => setTimeout(next, 1));
      };
      next();
    } else {
      res.writeHead(200, auth, echo);
      res.end(body);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, seen, port: (server.address() as AddressInfo).port };
}

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Every plaintext byte the client read on the connection: status line, headers and body. */
  wire: string;
}

let dir: string;
let leaseCa: LeaseCa;
let upstreamCa: LeaseCa;
let good: Awaited<ReturnType<typeof upstream>>;
let untrusted: Awaited<ReturnType<typeof upstream>>;
let wrongName: Awaited<ReturnType<typeof upstream>>;
const harnesses: net.Server[] = [];
const counts = { up: 0, down: 0 };
/** The refusals the interceptor reported, by tunnel socket path. */
const denials = new Map<string, string[]>();

/** A unix socket whose every connection is handed to the interceptor as a tunnel to `target`. */
async function tunnel(target: InterceptTarget, route: InterceptRoute): Promise<string> {
  const intercept = createInterceptor({ upstreamCa: [upstreamCa.certPem] });
  const path = join(dir, `t${harnesses.length}`);
  denials.set(path, []);
  const server = net.createServer((socket) =>
    intercept(
      socket,
      target,
      route,
      (up, down) => {
        counts.up += up;
        counts.down += down;
      },
      (reason) => denials.get(path)!.push(reason),
    ),
  );
  await new Promise<void>((resolve) => server.listen(path, resolve));
  harnesses.push(server);
  return path;
}

const route = (port: number): InterceptRoute => ({
  id: 'route-1',
  inject: [{ host: HOST, port, header: 'Authorization', value: VALUE, secret: SECRET }],
  ca: leaseCa,
});

/** An HTTPS request through the tunnel at `path`, trusting only the lease CA. */
function request(
  path: string,
  port: number,
  url: string,
  opts: { headers?: Record<string, string>; rawHeaders?: string[]; method?: string; servername?: string } = {},
): Promise<Received> {
  return new Promise((resolve, reject) => {
    const wire: Buffer[] = [];
    const req = https.request({
      host: HOST,
      port,
      path: url,
      method: opts.method ?? 'GET',
      headers: opts.headers,
      createConnection: () => {
        const socket = tls.connect({ path, servername: opts.servername ?? HOST, ca: [leaseCa.certPem] });
        socket.on('data', (chunk: Buffer) => wire.push(chunk));
        return socket;
      },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const body: Buffer[] = [];
      res.on('data', (c: Buffer) => body.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          body: Buffer.concat(body).toString(),
          wire: Buffer.concat(wire).toString('latin1'),
        }),
      );
    });
    req.end();
  });
}

/** Raw bytes over TLS through the tunnel (for requests an HTTP client would not send); all it read back. */
function rawExchange(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const socket = tls.connect({ path, servername: HOST, ca: [leaseCa.certPem] }, () => socket.write(text));
    socket.on('data', (c: Buffer) => got.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
    setTimeout(() => socket.destroy(), 5_000).unref();
  });
}

function expectNoSecret(text: string): void {
  expect(text).not.toContain(SECRET);
  expect(text).not.toContain(SECRET.slice(0, 12));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'egress-inject-'));
  leaseCa = await createLeaseCa([HOST]);
  upstreamCa = await createLeaseCa([HOST, 'other.example.test']);
  const strangerCa = await createLeaseCa([HOST]);
  good = await upstream(await leafFor(upstreamCa, HOST));
  untrusted = await upstream(await leafFor(strangerCa, HOST));
  wrongName = await upstream(await leafFor(upstreamCa, 'other.example.test'));
});

afterAll(() => {
  for (const s of [...harnesses, good.server, untrusted.server, wrongName.server]) s.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('egress credential brokering', () => {
  it('the upstream echoes the header: a client holding the secret reads it back (control)', async () => {
    const res = await new Promise<string>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: good.port,
          servername: HOST,
          ca: [upstreamCa.certPem],
          headers: { authorization: VALUE },
        },
        (r) => {
          let body = `${r.statusMessage} ${JSON.stringify(r.headers)}`;
          r.on('data', (c: Buffer) => (body += c.toString()));
          r.on('end', () => resolve(body));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(res).toContain(SECRET);
  });

  it('adds the header upstream, and the secret is nowhere in what the client read', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    counts.up = counts.down = 0;
    const res = await request(path, good.port, '/echo');
    expect(res.status).toBe(200);
    const seen = good.seen.at(-1)!;
    expect(seen.headers.authorization).toBe(VALUE);
    expect(seen.headers.host).toBe(`${HOST}:${good.port}`);
    expect(seen.headers['accept-encoding']).toBe('identity');
    // The echo came back masked, same length, in the status line, headers and body.
    expect(res.headers['x-echo-auth']).toBe('*'.repeat(VALUE.length));
    expect(res.headers['x-echo-secret']).toBe('*'.repeat(SECRET.length));
    expect(JSON.parse(res.body).auth).toBe('*'.repeat(VALUE.length));
    expectNoSecret(res.wire);
    expect(counts.up).toBeGreaterThan(0);
    expect(counts.down).toBeGreaterThan(res.body.length);
  });

  it('replaces a header of the same name the client sent, whatever its case', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    const res = await request(path, good.port, '/echo', {
      headers: { AUTHORIZATION: 'Bearer mine', 'accept-encoding': 'gzip' },
    });
    expect(res.status).toBe(200);
    const seen = good.seen.at(-1)!;
    expect(seen.raw.filter((h) => h.toLowerCase() === 'authorization')).toHaveLength(1);
    expect(seen.headers.authorization).toBe(VALUE);
    expect(seen.headers['accept-encoding']).toBe('identity');
    expectNoSecret(res.wire);
  });

  it('decodes and masks a body the upstream compresses anyway (gzip, br); refuses an encoding it cannot read', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    for (const url of ['/gzip', '/br']) {
      const res = await request(path, good.port, url);
      expect(res.status).toBe(200);
      expect(res.headers['content-encoding']).toBeUndefined();
      expect(JSON.parse(res.body).secret).toBe('*'.repeat(SECRET.length));
      expectNoSecret(res.wire);
    }
    const zstd = await request(path, good.port, '/zstd');
    expect(zstd.status).toBe(502);
    expectNoSecret(zstd.wire);
  });

  it('masks a secret that reaches the client one byte at a time', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    const res = await request(path, good.port, '/drip');
    expect(res.body).toBe(`before ${'*'.repeat(VALUE.length)} after`);
    expectNoSecret(res.wire);
  });

  it('refuses a request whose Host is not the tunnel target, before reaching the upstream', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    const before = good.seen.length;
    for (const host of ['evil.example.test', `${HOST}:1`, `${HOST}.evil.test:${good.port}`]) {
      const res = await request(path, good.port, '/echo', { headers: { host } });
      expect(res.status).toBe(403);
      expect(res.body).toMatch(/^host_mismatch/);
      expectNoSecret(res.wire);
    }
    expect(good.seen.length).toBe(before);
    expect(denials.get(path)).toEqual(['host_mismatch', 'host_mismatch', 'host_mismatch']);
  });

  it('refuses a nested CONNECT, an absolute-form target and garbage inside the tunnel', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    const before = good.seen.length;
    const nested = await rawExchange(path, `CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: ${HOST}:${good.port}\r\n\r\n`);
    expect(nested).toMatch(/^HTTP\/1\.1 403/);
    const absolute = await rawExchange(
      path,
      `GET https://${HOST}:${good.port}/echo HTTP/1.1\r\nHost: ${HOST}:${good.port}\r\nConnection: close\r\n\r\n`,
    );
    expect(absolute).toMatch(/^HTTP\/1\.1 400/);
    const garbage = await rawExchange(path, '\x00\x01\x02 not http at all\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    expect(good.seen.length).toBe(before);
    expect(denials.get(path)).toEqual(['nested_connect', 'bad_request', 'bad_request']);
    // The tunnel still serves a well-formed request afterwards.
    expect((await request(path, good.port, '/echo')).status).toBe(200);
  });

  it('refuses a TLS handshake naming another host (SNI), and a stream that is not TLS', async () => {
    const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, route(good.port));
    await expect(request(path, good.port, '/echo', { servername: 'other.example.test' })).rejects.toThrow();
    expect(denials.get(path)).toEqual(['sni_mismatch']);
    const plainText = await new Promise<string>((resolve) => {
      const got: Buffer[] = [];
      const socket = net.connect(path, () => socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      socket.on('data', (c: Buffer) => got.push(c));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
    });
    expectNoSecret(plainText);
    expect(plainText).not.toContain('HTTP/1.1 200');
  });

  it('answers 502 without the secret when the upstream is not trusted, has another name or is down', async () => {
    const cases: [InterceptTarget, RegExp][] = [
      [{ host: HOST, port: untrusted.port, address: '127.0.0.1' }, /^upstream_failed: [A-Z_]+/],
      [{ host: HOST, port: wrongName.port, address: '127.0.0.1' }, /^upstream_failed: ERR_TLS_CERT_ALTNAME_INVALID/],
    ];
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const downPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    cases.push([{ host: HOST, port: downPort, address: '127.0.0.1' }, /^upstream_failed: ECONNREFUSED/]);
    for (const [target, reason] of cases) {
      const path = await tunnel(target, route(target.port));
      const res = await request(path, target.port, '/echo');
      expect(res.status).toBe(502);
      expect(res.body).toMatch(reason);
      expectNoSecret(res.wire);
    }
    // The untrusted and misnamed upstreams never saw the header.
    expect(untrusted.seen).toHaveLength(0);
    expect(wrongName.seen).toHaveLength(0);
  });

  it('closes a tunnel to a host:port without an inject rule, or without a CA', async () => {
    const rules = route(good.port);
    const elsewhere = { ...rules, inject: rules.inject.map((r) => ({ ...r, port: 443 })) };
    for (const r of [{ ...rules, inject: [] }, { ...rules, ca: null }, elsewhere]) {
      const path = await tunnel({ host: HOST, port: good.port, address: '127.0.0.1' }, r);
      await expect(request(path, good.port, '/echo')).rejects.toThrow();
    }
  });
});
