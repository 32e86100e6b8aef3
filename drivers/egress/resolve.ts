// How the egress proxy turns a name into addresses, and which addresses count as public. The proxy looks a
// name up once per connection and connects to an address it checked (no second lookup to rebind). Tests
// reach their loopback servers by name through ENVRUN_EGRESS_TEST_RESOLVE, which production refuses.
import { promises as dns } from 'node:dns';
import { ConfigError, readSetting } from '../../config/settings.js';
import { normalizeHostName } from '../../contracts/egress.js';
import { canonicalAddress, isPublicAddress } from './policy.js';

export interface ResolvedAddress {
  address: string;
  /** 4 or 6. */
  family: number;
}

/** Every address of a name; rejects when it has none. */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

/** The system's resolver (getaddrinfo: /etc/hosts, then DNS), every answer in its order. */
export const systemResolver: Resolver = async (host) => dns.lookup(host, { all: true, verbatim: true });

export interface EgressResolution {
  resolve: Resolver;
  isPublic: (address: string) => boolean;
}

/**
 * The resolver and the public-address rule of this process: the system's, unless ENVRUN_EGRESS_TEST_RESOLVE
 * names hosts (answered from it; other names go to the system) and addresses to count as public. Refused
 * under NODE_ENV=production with a ConfigError naming the setting.
 */
export function egressResolution(env: NodeJS.ProcessEnv = process.env): EgressResolution {
  const test = readSetting('ENVRUN_EGRESS_TEST_RESOLVE', env);
  if (test === undefined) return { resolve: systemResolver, isPublic: isPublicAddress };
  if (readSetting('NODE_ENV', env) === 'production')
    throw new ConfigError(
      'invalid configuration: ENVRUN_EGRESS_TEST_RESOLVE: a test setting, refused under NODE_ENV=production',
    );
  const hosts = new Map<string, ResolvedAddress[]>();
  for (const [name, addresses] of Object.entries(test.hosts)) {
    const key = normalizeHostName(name);
    if (key)
      hosts.set(
        key,
        addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
      );
  }
  const extra = new Set(test.public.map(canonicalAddress).filter((a) => a !== null));
  return {
    resolve: async (host) => hosts.get(host) ?? systemResolver(host),
    isPublic: (address) => extra.has(canonicalAddress(address) ?? '') || isPublicAddress(address),
  };
}
