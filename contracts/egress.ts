// What a sandbox with `network: "allowlist"` may reach: `host:port` rules per phase (the provision command,
// then the run's commands), and headers the host's egress proxy adds for some hosts (credential brokering:
// the secret stays on the worker). The proxy that enforces it is drivers/egress/; a provider that cannot
// enforce it refuses the environment.
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { SecretRef } from './common.js';

/** When a command runs: the provision command (and a warm pool's fill), or the run's own commands. */
export const EGRESS_PHASES = ['provision', 'run'] as const;
export type EgressPhase = (typeof EGRESS_PHASES)[number];

/** The port the relay inside the sandbox listens on (127.0.0.1), which HTTP(S)_PROXY names. */
export const EGRESS_PROXY_PORT = 3128;

/** Why the proxy refused a connection (audit rows, activity log, the 403's reason line). */
export const EGRESS_DENY_REASONS = [
  /** No rule of the phase matches the host and port. */
  'not_listed',
  /** An IP address asked for that no rule lists literally. */
  'ip_not_listed',
  /** A name that resolved to a private, loopback, link-local or otherwise non-public address. */
  'private_address',
  /** The name did not resolve. */
  'resolve_failed',
  /** A CONNECT inside a tunnel, or aimed at the proxy itself. */
  'nested_connect',
  /** An HTTP request whose Host is not the host it was allowed for. */
  'host_mismatch',
  /** A TLS handshake naming (SNI) another host than the tunnel's. */
  'sni_mismatch',
  /** Not a proxy request the proxy understands. */
  'bad_request',
] as const;
export type EgressDenyReason = (typeof EGRESS_DENY_REASONS)[number];

/**
 * Connections of one lease phase to one host:port with one verdict and reason, summed: what the worker's
 * egress proxy hands the audit (drivers/egress/) and the store records (store/egress.ts). Host `*` (port 0)
 * sums a route's connections beyond the distinct keys it may have.
 */
export interface EgressAuditRow {
  companyId: string;
  heartbeatRunId: string;
  leaseId: string;
  environmentId: string;
  phase: EgressPhase;
  host: string;
  port: number;
  verdict: 'allowed' | 'denied';
  reason: string | null;
  connections: number;
  bytesUp: number;
  bytesDown: number;
  firstAt: Date;
  lastAt: Date;
}

export interface ParsedEgressRule {
  /** `name`: exactly this host; `wildcard`: any subdomain of `host` (not `host` itself); an IP literal. */
  kind: 'name' | 'wildcard' | 'ipv4' | 'ipv6';
  /** Lower case, no trailing dot; an IPv6 address in its canonical form, without brackets. */
  host: string;
  port: number;
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** A DNS name as rules and inject entries write it, normalized, or null. Its last label is not numeric. */
export function normalizeHostName(raw: string): string | null {
  const host = raw.toLowerCase().replace(/\.$/, '');
  if (host.length === 0 || host.length > 253) return null;
  const labels = host.split('.');
  if (!labels.every((l) => LABEL.test(l))) return null;
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return null; // 1.2.3 is an address, not a name
  return host;
}

/** Parses `host:port` (`*.name:port`, `1.2.3.4:port`, `[::1]:port`); throws a plain message on a bad rule. */
export function parseEgressRule(rule: string): ParsedEgressRule {
  const m = /^(\[[^\]]*\]|[^:[\]]+):([0-9]{1,5})$/.exec(rule);
  if (!m) throw new Error(`"${rule}" is not host:port (a name, *.name, an IPv4 address or [IPv6], then a port)`);
  const [, rawHost, rawPort] = m as unknown as [string, string, string];
  const port = Number(rawPort);
  if (!Number.isInteger(port) || port < 1 || port > 65_535 || String(port) !== rawPort)
    throw new Error(`"${rule}": the port must be 1 to 65535`);
  if (rawHost.startsWith('[')) {
    const inner = rawHost.slice(1, -1);
    if (!isIPv6(inner)) throw new Error(`"${rule}": ${inner} is not an IPv6 address`);
    return { kind: 'ipv6', host: ipaddr.IPv6.parse(inner).toString(), port };
  }
  if (isIPv4(rawHost)) return { kind: 'ipv4', host: rawHost, port };
  if (rawHost.startsWith('*.')) {
    const host = normalizeHostName(rawHost.slice(2));
    if (!host) throw new Error(`"${rule}": ${rawHost} is not *. followed by a DNS name`);
    return { kind: 'wildcard', host, port };
  }
  const host = normalizeHostName(rawHost);
  if (!host) throw new Error(`"${rule}": ${rawHost} is not a DNS name, *.name or an IP address`);
  return { kind: 'name', host, port };
}

/** One `host:port` rule, validated where it is written. */
export const EgressRule = z
  .string()
  .max(300)
  .superRefine((rule, ctx) => {
    try {
      parseEgressRule(rule);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

const EgressRules = z.array(EgressRule).max(256);

/** Headers the proxy must never be told to set: they frame or route the request. */
const RESERVED_HEADERS = new Set([
  'host',
  'connection',
  'content-length',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'keep-alive',
  'expect',
]);

/** A header the proxy adds to every request to `host` (TLS to it is terminated by the proxy). */
export const EgressInject = z
  .object({
    /** A DNS name (no wildcard, no address): the upstream is verified against the worker's trust store. */
    host: z.string().superRefine((h, ctx) => {
      if (normalizeHostName(h) === null) ctx.addIssue({ code: 'custom', message: 'must be a DNS name' });
    }),
    port: z.number().int().min(1).max(65_535).default(443),
    /** The header's name (lower-cased when sent). */
    header: z
      .string()
      .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, 'must be an HTTP header name')
      .refine((h) => !RESERVED_HEADERS.has(h.toLowerCase()) && !h.toLowerCase().startsWith('proxy-'), {
        message: 'must not be a header that frames or routes the request',
      }),
    /** The header's value with `{secret}` where the secret goes, once: `Bearer {secret}`. */
    value: z
      .string()
      .max(1024)
      .refine((v) => v.split('{secret}').length === 2, { message: 'must hold {secret} exactly once' })
      .refine((v) => !/[\r\n\0]/.test(v), { message: 'must not hold CR, LF or NUL' }),
    /** Where the worker reads the secret: `env:NAME` or `file:/path`, granted to the company. */
    secret: SecretRef,
  })
  .strict();
export type EgressInject = z.infer<typeof EgressInject>;

/** The `egress` key of a sandbox environment's config. */
export const EgressConfig = z
  .object({
    /** Rules of both phases, unless the phase has its own list. */
    allow: EgressRules.default([]),
    /** Rules of the provision command (and a warm pool's fills) instead of `allow`. */
    provision: z.object({ allow: EgressRules }).strict().optional(),
    /** Rules of the run's commands instead of `allow`. */
    run: z.object({ allow: EgressRules }).strict().optional(),
    inject: z.array(EgressInject).max(16).default([]),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = new Map<string, number>();
    config.inject.forEach((entry, i) => {
      const key = `${normalizeHostName(entry.host)}:${entry.port}`;
      const before = seen.get(key);
      if (before !== undefined)
        ctx.addIssue({ code: 'custom', path: ['inject', i, 'host'], message: `repeats inject[${before}]` });
      seen.set(key, i);
    });
  });
export type EgressConfig = z.infer<typeof EgressConfig>;

/** The rules that hold for `phase`: its own list when it has one, else `allow`. */
export function egressRulesFor(config: EgressConfig, phase: EgressPhase): ParsedEgressRule[] {
  return (config[phase]?.allow ?? config.allow).map(parseEgressRule);
}
