// The egress proxy's rules: what a request names (`host:port`), whether a rule of the route lists it, and
// whether an address a name resolved to is public. An IP address is reached only when a rule lists it
// literally (the operator's choice); a name only when every address it resolves to is public unicast.
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { normalizeHostName, type EgressDenyReason, type ParsedEgressRule } from '../../contracts/egress.js';

/** What a CONNECT or an absolute-form URL names: a DNS name or an IP address (canonical, no brackets). */
export interface EgressTarget {
  kind: 'name' | 'ipv4' | 'ipv6';
  host: string;
  port: number;
}

/** A host as a request writes it (`name`, `1.2.3.4`, `[v6]`), normalized; null when it is none of these. */
export function parseHost(raw: string): Pick<EgressTarget, 'kind' | 'host'> | null {
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']')) return null;
    const inner = raw.slice(1, -1);
    if (inner.includes('%') || !isIPv6(inner)) return null;
    return { kind: 'ipv6', host: ipaddr.IPv6.parse(inner).toString() };
  }
  if (isIPv4(raw)) return { kind: 'ipv4', host: raw };
  const host = normalizeHostName(raw);
  return host ? { kind: 'name', host } : null;
}

/** `host:port` (or `host` alone when `defaultPort` is given), as a CONNECT line or a Host header writes it. */
export function parseAuthority(raw: string, defaultPort?: number): EgressTarget | null {
  if (raw.length === 0 || raw.length > 300) return null;
  const m = /^(\[[^\]]*\]|[^:[\]]+)(?::([0-9]{1,5}))?$/.exec(raw);
  if (!m) return null;
  const [, rawHost, rawPort] = m as unknown as [string, string, string | undefined];
  const port = rawPort === undefined ? defaultPort : Number(rawPort);
  if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65_535) return null;
  const host = parseHost(rawHost);
  return host ? { ...host, port } : null;
}

/** The first rule that lists the target, or null. A name never matches an address rule, nor the reverse. */
export function matchRule(rules: readonly ParsedEgressRule[], target: EgressTarget): ParsedEgressRule | null {
  for (const rule of rules) {
    if (rule.port !== target.port) continue;
    if (target.kind === 'name') {
      if (rule.kind === 'name' && rule.host === target.host) return rule;
      if (rule.kind === 'wildcard' && target.host.endsWith(`.${rule.host}`)) return rule;
    } else if (rule.kind === target.kind && rule.host === target.host) return rule;
  }
  return null;
}

/** Why the rules refuse the target before any lookup, or null when one lists it. */
export function refuseTarget(rules: readonly ParsedEgressRule[], target: EgressTarget): EgressDenyReason | null {
  if (matchRule(rules, target)) return null;
  return target.kind === 'name' ? 'not_listed' : 'ip_not_listed';
}

/**
 * Whether an address is public: only ipaddr.js's `unicast` range counts (not private, loopback, link-local,
 * unique-local, carrier-grade NAT, reserved, multicast, NAT64, 6to4, Teredo...). An IPv4-mapped IPv6
 * address is judged as its IPv4 address. Anything unparseable is not public.
 */
export function isPublicAddress(address: string): boolean {
  try {
    let parsed = ipaddr.parse(address);
    if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress())
      parsed = (parsed as ipaddr.IPv6).toIPv4Address();
    return parsed.range() === 'unicast';
  } catch {
    return false;
  }
}

/** The canonical text of an address (`::ffff:1.2.3.4` stays IPv6), or null. */
export function canonicalAddress(address: string): string | null {
  if (isIPv4(address)) return address;
  if (isIPv6(address) && !address.includes('%')) return ipaddr.IPv6.parse(address).toString();
  return null;
}

/** The most of a tunnel's first bytes the proxy reads before it decides (a ClientHello, request headers). */
export const SNIFF_CAP = 64 * 1024;
const HTTP_HEAD_CAP = 16 * 1024;

/** What the first bytes inside a CONNECT tunnel are. */
export type TunnelStart =
  | { kind: 'more' }
  | { kind: 'invalid' }
  | { kind: 'other' }
  /** A TLS ClientHello and the host names its SNI extension carries (none: no SNI). */
  | { kind: 'tls'; names: string[] }
  /** An HTTP request: its method, request target and every Host header's value. */
  | { kind: 'http'; method: string; target: string; hosts: string[] };

/**
 * Reads the start of a tunnel: a TLS ClientHello (SNI), an HTTP request head, or another protocol. `more`
 * until enough has arrived; `invalid` for a truncated-for-good or oversized TLS or HTTP start. Never throws.
 */
export function sniffTunnel(buf: Buffer): TunnelStart {
  if (buf.length === 0) return { kind: 'more' };
  if (buf[0] === 0x16) return sniffTls(buf);
  return sniffHttp(buf);
}

function isLetter(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
}

function sniffHttp(buf: Buffer): TunnelStart {
  // Servers may skip empty lines before a request line: so does the check.
  let i = 0;
  while (i < buf.length && (buf[i] === 0x0d || buf[i] === 0x0a)) i++;
  const start = i;
  if (start === buf.length) return buf.length <= HTTP_HEAD_CAP ? { kind: 'more' } : { kind: 'invalid' };
  while (i < buf.length && i - start <= 20 && isLetter(buf[i]!)) i++;
  if (i === buf.length) return i - start <= 20 && buf.length <= HTTP_HEAD_CAP ? { kind: 'more' } : { kind: 'other' };
  if (i === start || buf[i] !== 0x20) return { kind: 'other' };
  const text = buf.subarray(start, Math.min(buf.length, start + HTTP_HEAD_CAP)).toString('latin1');
  const end = /\r?\n\r?\n/.exec(text);
  if (!end) return buf.length - start >= HTTP_HEAD_CAP ? { kind: 'invalid' } : { kind: 'more' };
  const [requestLine, ...headerLines] = text.slice(0, end.index).split(/\r?\n/);
  const line = /^([A-Za-z]+) (\S+) HTTP\/\d\.\d$/.exec(requestLine ?? '');
  if (!line) return { kind: 'invalid' };
  const hosts: string[] = [];
  for (const header of headerLines) {
    const h = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(header);
    if (!h) return { kind: 'invalid' }; // no name, or a folded line
    if (h[1]!.toLowerCase() === 'host') hosts.push(h[2]!);
  }
  return { kind: 'http', method: line[1]!.toUpperCase(), target: line[2]!, hosts };
}

function sniffTls(buf: Buffer): TunnelStart {
  const fragments: Buffer[] = [];
  let handshakeLength = 0;
  let o = 0;
  while (o + 5 <= buf.length) {
    if (buf[o] !== 0x16) return { kind: 'invalid' };
    const recordLength = buf.readUInt16BE(o + 3);
    if (recordLength === 0 || recordLength > 16_384 + 2_048) return { kind: 'invalid' };
    if (o + 5 + recordLength > buf.length) break;
    fragments.push(buf.subarray(o + 5, o + 5 + recordLength));
    handshakeLength += recordLength;
    o += 5 + recordLength;
    const hs = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments, handshakeLength);
    if (hs.length < 4) continue;
    if (hs[0] !== 0x01) return { kind: 'invalid' };
    const bodyLength = hs.readUIntBE(1, 3);
    if (bodyLength + 4 + 5 > SNIFF_CAP) return { kind: 'invalid' };
    if (hs.length >= 4 + bodyLength) {
      const names = serverNames(hs.subarray(4, 4 + bodyLength));
      return names ? { kind: 'tls', names } : { kind: 'invalid' };
    }
  }
  return buf.length >= SNIFF_CAP ? { kind: 'invalid' } : { kind: 'more' };
}

/** The host names of a ClientHello body's server_name extension; null when the body is malformed. */
function serverNames(body: Buffer): string[] | null {
  let p = 2 + 32; // version, random
  const need = (n: number) => p + n <= body.length;
  if (!need(1)) return null;
  p += 1 + body[p]!; // session id
  if (!need(2)) return null;
  p += 2 + body.readUInt16BE(p); // cipher suites
  if (!need(1)) return null;
  p += 1 + body[p]!; // compression methods
  if (p === body.length) return []; // no extensions
  if (!need(2)) return null;
  const extEnd = p + 2 + body.readUInt16BE(p);
  if (extEnd > body.length) return null;
  p += 2;
  const names: string[] = [];
  while (p < extEnd) {
    if (p + 4 > extEnd) return null;
    const type = body.readUInt16BE(p);
    const len = body.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) return null;
    if (type === 0) {
      const ext = body.subarray(p, p + len);
      if (ext.length < 2 || ext.readUInt16BE(0) + 2 !== ext.length) return null;
      for (let q = 2; q < ext.length;) {
        if (q + 3 > ext.length) return null;
        const nameType = ext[q]!;
        const nameLength = ext.readUInt16BE(q + 1);
        q += 3;
        if (q + nameLength > ext.length) return null;
        if (nameType === 0) names.push(ext.subarray(q, q + nameLength).toString('latin1'));
        q += nameLength;
      }
    }
    p += len;
  }
  return names;
}

/** Whether a Host header (or a URL's authority) names the target: same host, and same port when it gives one. */
export function hostMatches(value: string, target: EgressTarget): boolean {
  const named = parseAuthority(value.trim(), target.port);
  return named !== null && named.kind === target.kind && named.host === target.host && named.port === target.port;
}
