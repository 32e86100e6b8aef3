// Credential brokering: a tunnel to a host with an inject rule is TLS-terminated here with a leaf of the lease's
// CA, each HTTP/1.1 request on it gets the rule's header (the secret never enters the sandbox) and is sent on
// over TLS to the address the proxy checked, verified against the worker's trust store. Responses come back with
// the secret (and the whole header value) masked in the status line, headers and body.
import http from 'node:http';
import https from 'node:https';
import { Duplex, Transform, pipeline } from 'node:stream';
import tls from 'node:tls';
import zlib from 'node:zlib';
import type { EgressDenyReason } from '../../contracts/egress.js';
import { leafFor, type LeafCert, type LeaseCa } from './ca.js';

/** One inject rule of a route, resolved on the worker: `value` has the secret in it, `secret` is it alone. */
export interface InjectHeader {
  host: string;
  /** The upstream port the rule is for; 443 when absent. */
  port?: number;
  header: string;
  value: string;
  secret: string;
}

/** The tunnel's target: the name asked for and the address the proxy checked and connects to. */
export interface InterceptTarget {
  host: string;
  port: number;
  address: string;
}

export interface InterceptRoute {
  id: string;
  inject: InjectHeader[];
  ca: LeaseCa | null;
}

/**
 * Takes over a client stream after the proxy answered 200 to its CONNECT; `count` gets bytes as they pass,
 * `deny` each refusal inside the tunnel (a request naming another Host, a nested CONNECT, a TLS server name
 * of another host, a request that is not HTTP/1.1 to a path).
 */
export type Intercept = (
  client: Duplex,
  target: InterceptTarget,
  route: InterceptRoute,
  count: (up: number, down: number) => void,
  deny?: (reason: EgressDenyReason) => void,
) => void;

export interface InterceptorOptions {
  /** More CAs the upstream may be signed by, beside the default trust store: tests only. */
  upstreamCa?: string[];
}

/** A TLS handshake with the client must finish within this. */
const HANDSHAKE_MS = 30_000;
/** A client connection or upstream request idle this long is closed. */
const IDLE_MS = 120_000;

/** Response headers never sent back: hop-by-hop. */
const DROP_RESPONSE = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
/** Request headers never sent on: hop-by-hop, proxy-only, or set here. */
const DROP_REQUEST = new Set([...DROP_RESPONSE, 'expect', 'host', 'accept-encoding']);

const MASK = 0x2a; // '*'

/** Byte strings to mask: each header value and secret, as sent and in the encodings a server might echo them in. */
function patternsOf(rules: InjectHeader[]): Buffer[] {
  const out = new Set<string>();
  for (const rule of rules) {
    for (const s of [rule.value, rule.secret]) {
      out.add(s);
      out.add(encodeURIComponent(s));
      out.add(JSON.stringify(s).slice(1, -1));
    }
  }
  return [...out]
    .filter((s) => s.length > 0)
    .sort((a, b) => b.length - a.length)
    .map((s) => Buffer.from(s, 'utf8'));
}

function maskAll(buf: Buffer, patterns: Buffer[]): void {
  for (const p of patterns) {
    for (let i = buf.indexOf(p); i !== -1; i = buf.indexOf(p, i + 1)) buf.fill(MASK, i, i + p.length);
  }
}

/** Masks patterns in a header name, value or status text (Node gives them as latin1: one char per byte). */
function maskString(s: string, patterns: Buffer[]): string {
  const buf = Buffer.from(s, 'latin1');
  if (buf.toString('latin1') !== s) {
    // Not one byte per char: mask the UTF-8 form instead.
    const utf8 = Buffer.from(s, 'utf8');
    maskAll(utf8, patterns);
    return utf8.toString('utf8');
  }
  maskAll(buf, patterns);
  return buf.toString('latin1');
}

/** How many bytes at the end of `buf` could begin a pattern (and must wait for the next chunk). */
function heldBack(buf: Buffer, patterns: Buffer[]): number {
  let hold = 0;
  for (const p of patterns) {
    const from = Math.max(0, buf.length - p.length + 1);
    for (let i = from; i < buf.length; i++) {
      if (buf.length - i <= hold) break;
      if (buf[i] === p[0] && buf.compare(p, 0, buf.length - i, i) === 0) {
        hold = buf.length - i;
        break;
      }
    }
  }
  return hold;
}

/** Masks patterns in a byte stream, also across chunk boundaries; holds back only a possible pattern's start. */
class Scrubber extends Transform {
  private tail: Buffer = Buffer.alloc(0);

  constructor(private readonly patterns: Buffer[]) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const buf = this.tail.length > 0 ? Buffer.concat([this.tail, chunk]) : Buffer.from(chunk);
    maskAll(buf, this.patterns);
    const hold = heldBack(buf, this.patterns);
    if (buf.length > hold) this.push(buf.subarray(0, buf.length - hold));
    this.tail = Buffer.from(buf.subarray(buf.length - hold));
    cb();
  }

  override _flush(cb: (err?: Error | null) => void): void {
    if (this.tail.length > 0) this.push(this.tail);
    cb();
  }
}

/** Decoders for a Content-Encoding list, in the order to apply them; null when one is not known. */
function decodersFor(encoding: string | undefined): Transform[] | null {
  if (!encoding) return [];
  const codings = encoding
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  const out: Transform[] = [];
  for (const coding of codings.reverse()) {
    if (coding === 'gzip' || coding === 'x-gzip') out.push(zlib.createGunzip());
    else if (coding === 'deflate') out.push(zlib.createInflate());
    else if (coding === 'br') out.push(zlib.createBrotliDecompress());
    else return null;
  }
  return out;
}

/** A short reason from an upstream error: its code only (messages may name things the sandbox need not see). */
function reasonOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : 'error';
}

/** Wraps the client stream so every byte each way is counted. */
function counted(client: Duplex, count: (up: number, down: number) => void): Duplex {
  const tally = (up: number, down: number) => {
    try {
      count(up, down);
    } catch {
      // the counter is the proxy's; a failure there must not break the connection
    }
  };
  const wrap = new Duplex({
    read() {
      client.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      tally(0, chunk.length);
      if (client.write(chunk)) cb();
      else client.once('drain', () => cb());
    },
    final(cb) {
      client.end();
      cb();
    },
    destroy(err, cb) {
      client.destroy();
      cb(err);
    },
  });
  client.on('data', (chunk: Buffer) => {
    tally(chunk.length, 0);
    if (!wrap.push(chunk)) client.pause();
  });
  client.on('end', () => wrap.push(null));
  client.on('error', (err) => wrap.destroy(err));
  client.on('close', () => wrap.destroy());
  return wrap;
}

interface Connection {
  target: InterceptTarget;
  rules: InjectHeader[];
  patterns: Buffer[];
  deny: (reason: EgressDenyReason) => void;
}

function plain(res: http.ServerResponse, status: number, line: string): void {
  if (res.destroyed) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  res.end(`${line}\n`);
}

/** Whether a Host header names the target (port included unless it is 443). */
function hostMatches(host: string | undefined, target: InterceptTarget): boolean {
  if (!host) return false;
  const m = /^([^:[\]]+?)\.?(?::([0-9]{1,5}))?$/.exec(host);
  if (!m) return false;
  const port = m[2] === undefined ? 443 : Number(m[2]);
  return m[1]!.toLowerCase() === target.host && port === target.port;
}

export function createInterceptor(options: InterceptorOptions = {}): Intercept {
  const ca = options.upstreamCa ? [...tls.rootCertificates, ...options.upstreamCa] : undefined;
  const agent = new https.Agent({ keepAlive: true, maxSockets: 64, ...(ca ? { ca } : {}) });
  const connections = new WeakMap<object, Connection>();
  const contexts = new WeakMap<LeafCert, tls.SecureContext>();

  const server = http.createServer({ requireHostHeader: true }, (req, res) => {
    const conn = connections.get(req.socket);
    if (!conn) return plain(res, 500, 'internal: unknown connection');
    forward(conn, req, res);
  });
  server.setTimeout(IDLE_MS);
  server.keepAliveTimeout = 30_000;
  server.on('connect', (_req, socket: Duplex) => {
    connections.get(socket)?.deny('nested_connect');
    socket.on('error', () => undefined);
    socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 15\r\n\r\nnested_connect\n');
  });
  server.on('upgrade', (_req, socket: Duplex) => {
    socket.on('error', () => undefined);
    socket.end(
      'HTTP/1.1 501 Not Implemented\r\nConnection: close\r\nContent-Length: 22\r\n\r\nupgrade not supported\n',
    );
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (typeof err.code === 'string' && err.code.startsWith('HPE_')) connections.get(socket)?.deny('bad_request');
    if (socket.writable)
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 12\r\n\r\nbad_request\n');
    socket.destroy();
  });

  function forward(conn: Connection, req: http.IncomingMessage, res: http.ServerResponse): void {
    const { target, rules, patterns } = conn;
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    if (!hostMatches(req.headers.host, target)) {
      conn.deny('host_mismatch');
      return plain(res, 403, `host_mismatch: the request's Host is not ${target.host}:${target.port}`);
    }
    const path = req.url ?? '';
    if (!path.startsWith('/') && !(path === '*' && req.method === 'OPTIONS')) {
      conn.deny('bad_request');
      return plain(res, 400, 'bad_request: the request target must be a path');
    }

    const injected = new Set(rules.map((r) => r.header.toLowerCase()));
    const connectionListed = new Set(
      (req.headers.connection ?? '')
        .split(',')
        .map((t) => t.trim().toLowerCase())
        .filter(Boolean),
    );
    const headers: Record<string, string | string[]> = {};
    const raw = req.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (DROP_REQUEST.has(name) || name.startsWith('proxy-') || injected.has(name) || connectionListed.has(name))
        continue;
      const before = headers[name];
      headers[name] = before === undefined ? raw[i + 1]! : [...[before].flat(), raw[i + 1]!];
    }
    headers.host = target.port === 443 ? target.host : `${target.host}:${target.port}`;
    headers['accept-encoding'] = 'identity';
    for (const rule of rules) headers[rule.header.toLowerCase()] = rule.value;

    let upReq: http.ClientRequest;
    try {
      upReq = https.request({
        host: target.address,
        port: target.port,
        servername: target.host,
        method: req.method,
        path,
        headers,
        agent,
        ...(ca ? { ca } : {}),
      });
    } catch (err) {
      return plain(res, 502, `upstream_failed: ${reasonOf(err)}`);
    }
    upReq.setTimeout(IDLE_MS, () => upReq.destroy(Object.assign(new Error('upstream idle'), { code: 'ETIMEDOUT' })));
    upReq.on('error', (err) => {
      if (!res.headersSent) plain(res, 502, `upstream_failed: ${reasonOf(err)}`);
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    req.pipe(upReq);

    upReq.on('response', (upRes) => {
      upRes.on('error', () => undefined);
      const noBody = req.method === 'HEAD' || upRes.statusCode === 204 || upRes.statusCode === 304;
      const decoders = noBody ? [] : decodersFor(upRes.headers['content-encoding']);
      if (decoders === null) {
        upRes.destroy();
        return plain(res, 502, 'upstream_failed: a content encoding the proxy cannot read');
      }
      const out: Record<string, string[]> = {};
      const rawUp = upRes.rawHeaders;
      for (let i = 0; i + 1 < rawUp.length; i += 2) {
        const name = rawUp[i]!.toLowerCase();
        if (DROP_RESPONSE.has(name)) continue;
        if (decoders.length > 0 && (name === 'content-encoding' || name === 'content-length')) continue;
        (out[maskString(name, patterns)] ??= []).push(maskString(rawUp[i + 1]!, patterns));
      }
      try {
        res.statusMessage = maskString(upRes.statusMessage ?? '', patterns);
        res.writeHead(upRes.statusCode ?? 502, out);
      } catch {
        upRes.destroy();
        return plain(res, 502, 'upstream_failed: a response header the proxy cannot pass on');
      }
      pipeline([upRes, ...decoders, new Scrubber(patterns), res], (err) => {
        if (err) res.destroy();
      });
    });
  }

  function secureContext(leaf: LeafCert): tls.SecureContext {
    let context = contexts.get(leaf);
    if (!context) {
      context = tls.createSecureContext({ cert: leaf.certPem, key: leaf.keyPem, minVersion: 'TLSv1.2' });
      contexts.set(leaf, context);
    }
    return context;
  }

  return (client, target, route, count, deny) => {
    client.on('error', () => undefined);
    const host = target.host.toLowerCase();
    const rules = route.inject.filter((r) => r.host.toLowerCase() === host && (r.port ?? 443) === target.port);
    if (rules.length === 0 || route.ca === null) {
      client.destroy();
      return;
    }
    const wrapped = counted(client, count);
    wrapped.on('error', () => undefined);
    const denied = (reason: EgressDenyReason) => {
      try {
        deny?.(reason);
      } catch {
        // the proxy's; a failure there must not break the connection
      }
    };
    const conn: Connection = { target: { ...target, host }, rules, patterns: patternsOf(rules), deny: denied };
    leafFor(route.ca, host).then(
      (leaf) => {
        if (wrapped.destroyed) return;
        let socket: tls.TLSSocket;
        try {
          socket = new tls.TLSSocket(wrapped, {
            isServer: true,
            secureContext: secureContext(leaf),
            ALPNProtocols: ['http/1.1'],
            // A ClientHello naming another host than the tunnel's is refused; none at all is accepted.
            SNICallback: (servername, cb) => {
              if (servername.toLowerCase().replace(/\.$/, '') === host) cb(null, secureContext(leaf));
              else {
                denied('sni_mismatch');
                cb(new Error('sni_mismatch'));
              }
            },
          });
        } catch {
          wrapped.destroy();
          return;
        }
        socket.on('error', () => socket.destroy());
        socket.on('close', () => wrapped.destroy());
        const handshake = setTimeout(() => socket.destroy(), HANDSHAKE_MS);
        socket.once('secure', () => {
          clearTimeout(handshake);
          connections.set(socket, conn);
          server.emit('connection', socket);
        });
        socket.once('close', () => clearTimeout(handshake));
      },
      () => wrapped.destroy(),
    );
  };
}
