// The egress proxy: one HTTP proxy server per route (a lease's phase), each on its own unix socket, which
// is all a sandbox with `network: "allowlist"` can reach. It serves CONNECT and absolute-form `http://`
// requests. Each is checked against the route's rules (policy.ts); a name is looked up once and the proxy
// connects to the address it checked. Inside a tunnel the first bytes are read before anything goes up:
// an HTTP request must not be a CONNECT nor name another Host, a TLS ClientHello must not name another
// host (SNI). A tunnel to a host with an inject rule goes to the interceptor (inject.ts) instead. Every
// connection ends in one EgressEvent. Nothing a client sends can throw out of a handler.
import { lstat, chmod, unlink } from 'node:fs/promises';
import {
  createServer,
  request as httpRequest,
  type ClientRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import {
  EGRESS_PROXY_PORT,
  normalizeHostName,
  type EgressDenyReason,
  type EgressPhase,
  type ParsedEgressRule,
} from '../../contracts/egress.js';
import { hostMatches, parseAuthority, refuseTarget, sniffTunnel, type EgressTarget } from './policy.js';
import type { ResolvedAddress, Resolver } from './resolve.js';

/** An inject rule resolved on the worker: `value` has the secret in it; `secret` is it alone (to scrub). */
export interface ResolvedInject {
  host: string;
  /** The upstream port; 443 when absent. */
  port?: number;
  header: string;
  value: string;
  secret: string;
}

/** What one socket serves: a lease's phase, its rules and its inject rules. */
export interface EgressRoute {
  id: string;
  companyId: string;
  heartbeatRunId: string;
  leaseId: string;
  phase: EgressPhase;
  rules: ParsedEgressRule[];
  inject: ResolvedInject[];
  /** The lease CA the interceptor signs with; null without inject rules. */
  ca: { certPem: string; keyPem: string } | null;
}

export type Route = EgressRoute;

/** One connection (a tunnel, or one absolute-form request), at its end or at its refusal. */
export interface EgressEvent {
  routeId: string;
  phase: EgressPhase;
  host: string;
  port: number;
  verdict: 'allowed' | 'denied';
  /** A deny reason; on an allowed connection, `upstream_failed` when the upstream could not be reached. */
  reason?: EgressDenyReason | 'upstream_failed';
  /** Bytes sent to the upstream and received from it. */
  bytesUp: number;
  bytesDown: number;
  /** Epoch ms. */
  at: number;
}

/** The checked target an interceptor connects to: `address` is the one the policy accepted. */
export interface InterceptTarget {
  host: string;
  port: number;
  address: string;
  family: number;
}

/**
 * Serves a tunnel to a host with an inject rule, after the proxy answered 200. `count` adds bytes sent up
 * and received down as they pass; the connection's event is emitted when `client` closes. `deny` reports a
 * refusal inside the tunnel (a Host of another host, a nested CONNECT, another TLS server name): each is
 * a denied event of its own.
 */
export type Interceptor = (
  client: Duplex,
  target: InterceptTarget,
  route: EgressRoute,
  count: (up: number, down: number) => void,
  deny: (reason: EgressDenyReason) => void,
) => void;

export interface EgressProxyOptions {
  resolve: Resolver;
  isPublic: (address: string) => boolean;
  intercept?: Interceptor;
  onEvent: (event: EgressEvent) => void;
  /** Reading a request head (or a tunnel's first bytes once they started), and resolving plus connecting. */
  headerTimeoutMs?: number;
  connectTimeoutMs?: number;
}

export interface EgressProxy {
  /** Serves the route on a new unix socket at `socketPath` (a stale socket there is replaced). */
  listen(route: EgressRoute, socketPath: string): Promise<void>;
  /** New rules for a route; its open connections are cut when its policy changed. */
  update(route: EgressRoute): void;
  /** Stops serving the route and cuts its connections. */
  unlisten(routeId: string): Promise<void>;
  close(): Promise<void>;
}

interface RouteState {
  route: EgressRoute;
  server: Server;
  /** Client and upstream sockets, cut when the route changes or goes. */
  sockets: Set<Socket>;
}

type Decision = { ok: true; address: string; family: number } | { ok: false; reason: EgressDenyReason };

const REASON_TEXT: Record<EgressDenyReason, string> = {
  not_listed: 'no rule of this phase lists it',
  ip_not_listed: 'an IP address is reached only when a rule lists it literally',
  private_address: 'the name resolves to a non-public address',
  resolve_failed: 'the name does not resolve',
  nested_connect: 'a CONNECT inside a tunnel, or to the proxy itself',
  host_mismatch: 'the Host header names another host',
  sni_mismatch: 'the TLS server name names another host',
  bad_request: 'not a proxy request (CONNECT host:port, or an absolute http:// URL)',
};

/** Hop-by-hop headers a proxy does not pass on (RFC 9110 7.6.1), plus the proxy's own. */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
  'expect',
]);

const noop = () => {};

/**
 * Buffers an upstream's reads land in (net.Socket `onread`), reused instead of a fresh one per read: fresh
 * memory costs a page fault per page and garbage collections, which made the proxy the slow part of a
 * download. A read that filled its buffer gets a large one next, any other a small one (a socket holds its
 * next buffer while idle). A buffer goes back only once its write to the client completed, and only the
 * bytes of its own read are ever written.
 */
const SMALL_READ = 16 * 1024;
const LARGE_READ = 256 * 1024;
const pools = { [SMALL_READ]: [] as Buffer[], [LARGE_READ]: [] as Buffer[] };
const POOL_MAX = { [SMALL_READ]: 256, [LARGE_READ]: 32 };
function takeBuffer(size: number): Buffer {
  return pools[size]!.pop() ?? Buffer.allocUnsafeSlow(size);
}
function giveBack(buffer: Buffer): void {
  const pool = pools[buffer.length];
  if (pool && pool.length < POOL_MAX[buffer.length]!) pool.push(buffer);
}

/** The upstream-to-client half of a tunnel: `onread` for the upstream socket, started once it is a tunnel. */
function downstream() {
  let client: Socket | null = null;
  let upstream: Socket | null = null;
  let early: Buffer[] = [];
  let waiting = false;
  let next = SMALL_READ;
  const resume = () => {
    if (!waiting) return;
    waiting = false;
    upstream?.resume();
  };
  const write = (chunk: Buffer, pooled: Buffer | null): boolean =>
    client!.write(chunk, pooled ? () => giveBack(pooled) : undefined);
  return {
    onread: {
      buffer: () => takeBuffer(next),
      callback: (n: number, buffer: Buffer): boolean => {
        next = n === buffer.length ? LARGE_READ : SMALL_READ;
        if (!client) {
          early.push(Buffer.from(buffer.subarray(0, n))); // bytes before the tunnel began: kept (a copy)
          giveBack(buffer);
          return true;
        }
        if (write(buffer.subarray(0, n), buffer)) return true;
        waiting = true; // reads stop until the client drains
        return false;
      },
    },
    /** Passes the upstream's bytes to `to` from now on, and its end; like `upstream.pipe(to)`. */
    start(from: Socket, to: Socket) {
      upstream = from;
      client = to;
      to.on('drain', resume);
      from.once('end', () => client?.end());
      const pending = early;
      early = [];
      for (const chunk of pending) if (!write(chunk, null)) waiting = true;
      if (waiting) from.pause();
    },
    /** Stops passing bytes (a refused tunnel). */
    stop() {
      client?.off('drain', resume);
      client = null;
    },
  };
}

function label(target: Pick<EgressTarget, 'kind' | 'host' | 'port'>): string {
  return target.kind === 'ipv6' ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/** The one plain line a refusal carries: the reason code, what was asked for, and why. Never a secret. */
function reasonLine(reason: EgressDenyReason, target: EgressTarget | null): string {
  return `egress denied (${reason})${target ? ` ${label(target)}` : ''}: ${REASON_TEXT[reason]}\n`;
}

function rawResponse(status: number, text: string, body: string): string {
  return (
    `HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

/** Drops hop-by-hop headers and the ones `Connection` names from a rawHeaders list. */
function forwardHeaders(raw: string[]): string[] {
  const named = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2)
    if (raw[i]!.toLowerCase() === 'connection')
      for (const token of raw[i + 1]!.split(',')) named.add(token.trim().toLowerCase());
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (!HOP_BY_HOP.has(name) && !named.has(name)) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function isLoopback(target: EgressTarget): boolean {
  return (
    (target.kind === 'ipv4' && target.host.startsWith('127.')) || (target.kind === 'ipv6' && target.host === '::1')
  );
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function policyKey(route: EgressRoute): string {
  return JSON.stringify([route.phase, route.rules, route.inject, route.ca?.certPem ?? null]);
}

export function createEgressProxy(options: EgressProxyOptions): EgressProxy {
  const headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const routes = new Map<string, RouteState>();

  const emit = (route: EgressRoute, event: Omit<EgressEvent, 'routeId' | 'phase' | 'at'>) => {
    try {
      options.onEvent({ routeId: route.id, phase: route.phase, ...event, at: Date.now() });
    } catch {
      // an event sink's failure never reaches a connection
    }
  };

  /** The policy's answer for a target: listed, then (for a name) one lookup whose every answer is public. */
  async function decide(route: EgressRoute, target: EgressTarget): Promise<Decision> {
    if (isLoopback(target) && target.port === EGRESS_PROXY_PORT) return { ok: false, reason: 'nested_connect' };
    const refused = refuseTarget(route.rules, target);
    if (refused) return { ok: false, reason: refused };
    if (target.kind !== 'name') return { ok: true, address: target.host, family: target.kind === 'ipv4' ? 4 : 6 };
    let answers: ResolvedAddress[];
    try {
      answers = await withTimeout(options.resolve(target.host), connectTimeoutMs);
    } catch {
      return { ok: false, reason: 'resolve_failed' };
    }
    if (!Array.isArray(answers) || answers.length === 0) return { ok: false, reason: 'resolve_failed' };
    if (answers.some((a) => !options.isPublic(a.address))) return { ok: false, reason: 'private_address' };
    const first = answers[0]!;
    return { ok: true, address: first.address, family: first.family === 6 ? 6 : 4 };
  }

  /** A TCP connection to the checked address; `done` gets it connected, or an error (timeout included). */
  function dial(
    state: RouteState,
    address: string,
    family: number,
    port: number,
    done: (err: Error | null, socket: Socket, down: ReturnType<typeof downstream>) => void,
  ) {
    const down = downstream();
    const upstream = connect({ host: address, port, family, allowHalfOpen: true, noDelay: true, onread: down.onread });
    state.sockets.add(upstream);
    upstream.once('close', () => state.sockets.delete(upstream));
    upstream.setTimeout(connectTimeoutMs, () => upstream.destroy(new Error('connect timed out')));
    const fail = (err: Error) => done(err, upstream, down);
    upstream.once('error', fail);
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      upstream.off('error', fail);
      upstream.on('error', noop);
      upstream.setNoDelay(true);
      done(null, upstream, down);
    });
  }

  // ---- CONNECT -------------------------------------------------------------------------------------

  function onConnect(state: RouteState, req: IncomingMessage, client: Socket, head: Buffer) {
    const route = state.route;
    client.on('error', noop);
    client.setNoDelay(true);
    const target = parseAuthority(req.url ?? '');
    if (!target) {
      client.end(rawResponse(400, 'Bad Request', reasonLine('bad_request', null)));
      emit(route, { host: '', port: 0, verdict: 'denied', reason: 'bad_request', bytesUp: 0, bytesDown: 0 });
      return;
    }
    decide(route, target)
      .then((decision) => afterDecision(state, route, target, client, head, decision))
      .catch(() => client.destroy());
  }

  function afterDecision(
    state: RouteState,
    route: EgressRoute,
    target: EgressTarget,
    client: Socket,
    head: Buffer,
    decision: Decision,
  ) {
    const host = target.host;
    if (!decision.ok) {
      client.end(rawResponse(403, 'Forbidden', reasonLine(decision.reason, target)));
      emit(route, { host, port: target.port, verdict: 'denied', reason: decision.reason, bytesUp: 0, bytesDown: 0 });
      return;
    }
    if (client.destroyed) return;
    const injected =
      target.kind === 'name' &&
      route.inject.some((i) => normalizeHostName(i.host) === target.host && (i.port ?? 443) === target.port);
    if (injected && options.intercept) {
      let up = 0;
      let down = 0;
      client.once('close', () =>
        emit(route, { host, port: target.port, verdict: 'allowed', bytesUp: up, bytesDown: down }),
      );
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) client.unshift(head);
      try {
        options.intercept(
          client,
          { host: target.host, port: target.port, address: decision.address, family: decision.family },
          route,
          (u, d) => {
            up += u;
            down += d;
          },
          (reason) => emit(route, { host, port: target.port, verdict: 'denied', reason, bytesUp: 0, bytesDown: 0 }),
        );
      } catch {
        client.destroy();
      }
      return;
    }
    dial(state, decision.address, decision.family, target.port, (err, upstream, down) => {
      if (err) {
        if (!client.destroyed)
          client.end(rawResponse(502, 'Bad Gateway', `egress: could not connect to ${label(target)}\n`));
        emit(route, {
          host,
          port: target.port,
          verdict: 'allowed',
          reason: 'upstream_failed',
          bytesUp: 0,
          bytesDown: 0,
        });
        return;
      }
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      tunnel(route, target, host, client, upstream, down, head);
    });
  }

  /** Answers 200, passes the upstream's bytes down at once and the client's up once its first bytes pass. */
  function tunnel(
    route: EgressRoute,
    target: EgressTarget,
    host: string,
    client: Socket,
    upstream: Socket,
    down: ReturnType<typeof downstream>,
    head: Buffer,
  ) {
    let refused = false;
    let lingering: NodeJS.Timeout | undefined;
    client.once('close', () => {
      clearTimeout(lingering);
      stop();
      upstream.destroy();
      if (!refused)
        emit(route, {
          host,
          port: target.port,
          verdict: 'allowed',
          bytesUp: upstream.bytesWritten,
          bytesDown: upstream.bytesRead,
        });
    });
    upstream.once('close', (hadError) => {
      if (hadError) client.destroy();
      else {
        client.end();
        lingering = setTimeout(() => client.destroy(), 30_000).unref();
      }
    });
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    down.start(upstream, client);

    let buffered: Buffer = head;
    let timer: NodeJS.Timeout | undefined;
    const stop = () => {
      client.off('data', onData);
      client.off('end', onEnd);
      clearTimeout(timer);
    };
    const refuse = (reason: EgressDenyReason, httpReply: boolean) => {
      stop();
      refused = true;
      down.stop();
      upstream.destroy();
      if (httpReply) client.end(rawResponse(403, 'Forbidden', reasonLine(reason, target)));
      else client.destroy();
      emit(route, { host, port: target.port, verdict: 'denied', reason, bytesUp: 0, bytesDown: upstream.bytesRead });
    };
    const pass = () => {
      stop();
      if (buffered.length > 0) upstream.write(buffered);
      client.pipe(upstream);
    };
    const judge = (final: boolean) => {
      const start = sniffTunnel(buffered);
      switch (start.kind) {
        case 'more':
          if (final) return buffered.length === 0 ? pass() : refuse('bad_request', false);
          timer ??= setTimeout(() => refuse('bad_request', false), headerTimeoutMs);
          return;
        case 'invalid':
          return refuse('bad_request', false);
        case 'other':
          return pass();
        case 'tls': {
          const names = start.names.map((n) => n.toLowerCase().replace(/\.$/, ''));
          if (target.kind === 'name' && names.some((n) => n !== target.host)) return refuse('sni_mismatch', false);
          return pass();
        }
        case 'http': {
          if (start.method === 'CONNECT') return refuse('nested_connect', true);
          const absolute = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(start.target);
          if (absolute && !hostMatches(absolute[1]!, target)) return refuse('host_mismatch', true);
          if (start.hosts.length > 1 || (start.hosts.length === 1 && !hostMatches(start.hosts[0]!, target)))
            return refuse('host_mismatch', true);
          return pass();
        }
      }
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      judge(false);
    };
    const onEnd = () => {
      judge(true);
      if (!refused) upstream.end();
    };
    client.on('data', onData);
    client.on('end', onEnd);
    if (buffered.length > 0) judge(false);
  }

  // ---- absolute-form http:// -----------------------------------------------------------------------

  function onRequest(state: RouteState, req: IncomingMessage, res: ServerResponse) {
    const route = state.route;
    const refuse = (status: number, reason: EgressDenyReason, target: EgressTarget | null) => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(reasonLine(reason, target));
      req.resume();
      emit(route, {
        host: target?.host ?? '',
        port: target?.port ?? 0,
        verdict: 'denied',
        reason,
        bytesUp: 0,
        bytesDown: 0,
      });
    };
    const url = /^http:\/\/([^/?#]*)([^#]*)/i.exec(req.url ?? '');
    const target = url && !url[1]!.includes('@') ? parseAuthority(url[1]!, 80) : null;
    if (!url || !target) return refuse(400, 'bad_request', null);
    const hosts: string[] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
      if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts.push(req.rawHeaders[i + 1]!);
    if (hosts.length > 1 || (hosts.length === 1 && !hostMatches(hosts[0]!, target)))
      return refuse(403, 'host_mismatch', target);
    const rest = url[2]!;
    const path = rest === '' ? '/' : rest.startsWith('/') ? rest : `/${rest}`;
    decide(route, target)
      .then((decision) => {
        if (!decision.ok) return refuse(403, decision.reason, target);
        forward(state, route, target, req, res, decision, path, hosts.length === 0 ? url[1]! : null);
      })
      .catch(() => res.destroy());
  }

  function forward(
    state: RouteState,
    route: EgressRoute,
    target: EgressTarget,
    req: IncomingMessage,
    res: ServerResponse,
    decision: { address: string; family: number },
    path: string,
    addHost: string | null,
  ) {
    const host = target.host;
    let emitted = false;
    let upstreamSocket: Socket | null = null;
    const finish = (reason?: 'upstream_failed') => {
      if (emitted) return;
      emitted = true;
      emit(route, {
        host,
        port: target.port,
        verdict: 'allowed',
        ...(reason ? { reason } : {}),
        bytesUp: upstreamSocket?.bytesWritten ?? 0,
        bytesDown: upstreamSocket?.bytesRead ?? 0,
      });
    };
    const headers = forwardHeaders(req.rawHeaders);
    if (addHost) headers.push('Host', addHost);
    let proxyReq: ClientRequest;
    try {
      proxyReq = httpRequest({
        host: decision.address,
        family: decision.family,
        port: target.port,
        method: req.method,
        path,
        headers,
        agent: false,
        setHost: false,
      });
    } catch {
      // a path or header Node refuses to send
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(reasonLine('bad_request', target));
      req.resume();
      emit(route, { host, port: target.port, verdict: 'denied', reason: 'bad_request', bytesUp: 0, bytesDown: 0 });
      return;
    }
    const timer = setTimeout(() => proxyReq.destroy(new Error('connect timed out')), connectTimeoutMs);
    proxyReq.on('socket', (socket: Socket) => {
      upstreamSocket = socket;
      state.sockets.add(socket);
      socket.setNoDelay(true);
      socket.once('connect', () => clearTimeout(timer));
      socket.once('close', () => {
        state.sockets.delete(socket);
        clearTimeout(timer);
        finish();
      });
    });
    proxyReq.on('error', () => {
      clearTimeout(timer);
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end(`egress: could not reach ${label(target)}\n`);
        finish('upstream_failed');
      } else res.destroy();
      req.resume();
    });
    proxyReq.on('response', (upRes: IncomingMessage) => {
      try {
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, forwardHeaders(upRes.rawHeaders));
      } catch {
        upRes.destroy();
        proxyReq.destroy();
        res.destroy();
        return;
      }
      pipeline(upRes, res, noop);
    });
    res.once('close', () => {
      if (!res.writableFinished) proxyReq.destroy();
    });
    pipeline(req, proxyReq, noop);
  }

  // ---- routes --------------------------------------------------------------------------------------

  async function listen(route: EgressRoute, socketPath: string): Promise<void> {
    if (routes.has(route.id)) throw new Error(`egress route ${route.id} is already served`);
    const server = createServer({
      headersTimeout: headerTimeoutMs,
      requestTimeout: 0,
      connectionsCheckingInterval: Math.min(1_000, headerTimeoutMs),
      keepAliveTimeout: 5_000,
      noDelay: true,
    });
    const state: RouteState = { route, server, sockets: new Set() };
    server.on('connection', (socket: Socket) => {
      state.sockets.add(socket);
      socket.on('error', noop);
      socket.once('close', () => state.sockets.delete(socket));
    });
    server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      try {
        onConnect(state, req, client, head);
      } catch {
        client.destroy();
      }
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      try {
        onRequest(state, req, res);
      } catch {
        res.destroy();
      }
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      const parseError = typeof err.code === 'string' && err.code.startsWith('HPE_');
      if (socket.writable && parseError) socket.end(rawResponse(400, 'Bad Request', reasonLine('bad_request', null)));
      else socket.destroy();
      if (parseError)
        emit(state.route, { host: '', port: 0, verdict: 'denied', reason: 'bad_request', bytesUp: 0, bytesDown: 0 });
    });
    try {
      if ((await lstat(socketPath)).isSocket()) await unlink(socketPath);
    } catch {
      // nothing there
    }
    routes.set(route.id, state);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
      // The sandbox's relay runs as another uid; the route's folder (a random name) is what guards it.
      await chmod(socketPath, 0o666);
    } catch (err) {
      routes.delete(route.id);
      server.close();
      throw err;
    }
    server.on('error', noop);
  }

  function cut(state: RouteState) {
    for (const socket of state.sockets) socket.destroy();
    state.sockets.clear();
  }

  function update(route: EgressRoute): void {
    const state = routes.get(route.id);
    if (!state) throw new Error(`egress route ${route.id} is not served`);
    const changed = policyKey(state.route) !== policyKey(route);
    state.route = route;
    if (changed) cut(state);
  }

  async function unlisten(routeId: string): Promise<void> {
    const state = routes.get(routeId);
    if (!state) return;
    routes.delete(routeId);
    const closed = new Promise<void>((resolve) => state.server.close(() => resolve()));
    cut(state);
    await closed;
  }

  async function close(): Promise<void> {
    await Promise.all([...routes.keys()].map(unlisten));
  }

  return { listen, update, unlisten, close };
}
