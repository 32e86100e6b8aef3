// The egress proxy's pure rules (drivers/egress/policy.ts): what a request names, which rule lists it,
// which addresses are public, and how the first bytes of a tunnel are read (TLS ClientHello SNI, an HTTP
// request head), hostile bytes included; and the test resolver's setting, refused in production.
import { connect as netConnect, createServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../config/settings.js';
import { parseEgressRule } from '../../contracts/egress.js';
import {
  hostMatches,
  isPublicAddress,
  matchRule,
  parseAuthority,
  refuseTarget,
  sniffTunnel,
  SNIFF_CAP,
} from '../../drivers/egress/policy.js';
import { egressResolution } from '../../drivers/egress/resolve.js';
import { loadConfig } from '../../worker/config.js';

const rules = ['registry.npmjs.org:443', '*.github.com:443', '10.1.2.3:8080', '[2001:db8::1]:443'].map(parseEgressRule);
const target = (raw: string) => {
  const t = parseAuthority(raw);
  if (!t) throw new Error(`unparsed ${raw}`);
  return t;
};

describe('targets and rules', () => {
  it('parses CONNECT authorities and Host values, normalized', () => {
    expect(parseAuthority('Registry.NPMJS.org.:443')).toEqual({ kind: 'name', host: 'registry.npmjs.org', port: 443 });
    expect(parseAuthority('[2001:DB8:0::1]:443')).toEqual({ kind: 'ipv6', host: '2001:db8::1', port: 443 });
    expect(parseAuthority('1.2.3.4:80')).toEqual({ kind: 'ipv4', host: '1.2.3.4', port: 80 });
    expect(parseAuthority('example.com', 80)).toEqual({ kind: 'name', host: 'example.com', port: 80 });
    for (const bad of [
      'example.com',
      'example.com:0',
      'example.com:65536',
      'example.com:+80',
      '127.1:80', // a short IPv4 form: neither a name nor an address here
      '0x7f.0.0.1:80',
      '2130706433:80',
      '[fe80::1%eth0]:80',
      '[::1:80',
      'user@example.com:80',
      'exa mple.com:80',
      '',
      'a'.repeat(400),
    ])
      expect(parseAuthority(bad), bad).toBeNull();
  });

  it('matches names, wildcards (subdomains only) and literal addresses, each with its port', () => {
    expect(matchRule(rules, target('registry.npmjs.org:443'))).not.toBeNull();
    expect(matchRule(rules, target('registry.npmjs.org:80'))).toBeNull();
    expect(matchRule(rules, target('api.github.com:443'))).not.toBeNull();
    expect(matchRule(rules, target('a.b.github.com:443'))).not.toBeNull();
    expect(matchRule(rules, target('github.com:443'))).toBeNull();
    expect(matchRule(rules, target('evilgithub.com:443'))).toBeNull();
    expect(matchRule(rules, target('10.1.2.3:8080'))).not.toBeNull();
    expect(matchRule(rules, target('[2001:db8:0:0::1]:443'))).not.toBeNull();
    // The same address written another way is not listed literally.
    expect(matchRule(rules, target('[::ffff:10.1.2.3]:8080'))).toBeNull();
    expect(refuseTarget(rules, target('example.com:443'))).toBe('not_listed');
    expect(refuseTarget(rules, target('10.1.2.4:8080'))).toBe('ip_not_listed');
    expect(refuseTarget(rules, target('api.github.com:443'))).toBeNull();
  });

  it('counts only public unicast addresses as public; IPv4-mapped IPv6 as its IPv4', () => {
    for (const a of ['8.8.8.8', '140.82.112.3', '2606:4700::1111', '::ffff:8.8.8.8'])
      expect(isPublicAddress(a), a).toBe(true);
    for (const a of [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.0.1',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '255.255.255.255',
      '224.0.0.1',
      '198.18.0.1',
      '::1',
      '::',
      'fe80::1',
      'fc00::1',
      'fd12:3456::1',
      'fec0::1',
      '::ffff:127.0.0.1',
      '::ffff:169.254.169.254',
      '64:ff9b::a9fe:a9fe', // NAT64 of 169.254.169.254
      '2002:a9fe:a9fe::1', // 6to4
      'not an address',
      '',
    ])
      expect(isPublicAddress(a), a).toBe(false);
  });

  it('compares Host headers to the target: same host, same port when given', () => {
    const t = target('api.github.com:443');
    expect(hostMatches('api.github.com', t)).toBe(true);
    expect(hostMatches('API.github.com.:443', t)).toBe(true);
    expect(hostMatches('api.github.com:80', t)).toBe(false);
    expect(hostMatches('evil.com', t)).toBe(false);
    expect(hostMatches('', t)).toBe(false);
  });
});

describe('the first bytes of a tunnel', () => {
  let hello: Buffer;
  let noSni: Buffer;
  beforeAll(async () => {
    hello = await clientHello('api.github.com');
    noSni = await clientHello(undefined);
  });

  it('reads the SNI of a real ClientHello, and none when it has none', () => {
    expect(sniffTunnel(hello)).toEqual({ kind: 'tls', names: ['api.github.com'] });
    expect(sniffTunnel(noSni)).toEqual({ kind: 'tls', names: [] });
  });

  it('waits for a ClientHello cut anywhere, and reads one split over two records', () => {
    for (let n = 1; n < hello.length; n++) expect(sniffTunnel(hello.subarray(0, n)).kind, `${n} bytes`).toBe('more');
    const fragment = hello.subarray(5);
    const cut = 40;
    const record = (part: Buffer) =>
      Buffer.concat([Buffer.from([0x16, 0x03, 0x01, part.length >> 8, part.length & 0xff]), part]);
    const split = Buffer.concat([record(fragment.subarray(0, cut)), record(fragment.subarray(cut))]);
    expect(sniffTunnel(split)).toEqual({ kind: 'tls', names: ['api.github.com'] });
  });

  it('refuses oversized or malformed handshakes, and never throws on any bytes', () => {
    expect(sniffTunnel(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff])).kind).toBe('invalid');
    expect(sniffTunnel(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff])).kind).toBe('invalid');
    expect(sniffTunnel(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0])])).kind).toBe(
      'invalid',
    );
    expect(sniffTunnel(Buffer.alloc(SNIFF_CAP + 10, 0x16)).kind).toBe('invalid');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        sniffTunnel(Buffer.from(bytes));
      }),
      { numRuns: 2000 },
    );
    // A real ClientHello with bytes flipped: still no throw, and never a made-up name.
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(hello.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        (flips) => {
          const copy = Buffer.from(hello);
          for (const [i, b] of flips) copy[i] = b;
          const r = sniffTunnel(copy);
          if (r.kind === 'tls') for (const n of r.names) expect(n.length).toBeLessThan(300);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('reads an HTTP request head: method, target, every Host', () => {
    expect(sniffTunnel(Buffer.from('GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n'))).toEqual({
      kind: 'http',
      method: 'GET',
      target: '/x',
      hosts: ['a.test'],
    });
    expect(sniffTunnel(Buffer.from('\r\nconnect b.test:443 HTTP/1.1\r\n\r\n'))).toMatchObject({
      kind: 'http',
      method: 'CONNECT',
    });
    expect(sniffTunnel(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n'))).toMatchObject({
      hosts: ['a', 'b'],
    });
    expect(sniffTunnel(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n'))).toEqual({ kind: 'more' });
    expect(sniffTunnel(Buffer.from('GE'))).toEqual({ kind: 'more' });
    expect(sniffTunnel(Buffer.from('\r\n\r\n'))).toEqual({ kind: 'more' });
    expect(sniffTunnel(Buffer.from('GET / HTTP/1.1\r\n folded\r\n\r\n'))).toEqual({ kind: 'invalid' });
    expect(sniffTunnel(Buffer.from(`GET / HTTP/1.1\r\nX: ${'a'.repeat(20_000)}`))).toEqual({ kind: 'invalid' });
    expect(sniffTunnel(Buffer.from('\r\n'.repeat(10_000)))).toEqual({ kind: 'invalid' });
    expect(sniffTunnel(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'))).toEqual({ kind: 'other' });
    expect(sniffTunnel(Buffer.from([0x00, 0x01, 0x02]))).toEqual({ kind: 'other' });
  });
});

describe('the resolver setting', () => {
  const setting = JSON.stringify({ hosts: { 'A.Test': ['127.0.0.1', '::1'] }, public: ['127.0.0.1'] });

  it('answers listed names from the setting and counts its public addresses as public', async () => {
    const r = egressResolution({ ENVRUN_EGRESS_TEST_RESOLVE: setting });
    expect(await r.resolve('a.test')).toEqual([
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ]);
    expect(r.isPublic('127.0.0.1')).toBe(true);
    expect(r.isPublic('::ffff:127.0.0.1')).toBe(false);
    expect(r.isPublic('::1')).toBe(false);
    expect(r.isPublic('8.8.8.8')).toBe(true);
    const plain = egressResolution({});
    expect(plain.isPublic('127.0.0.1')).toBe(false);
    expect((await plain.resolve('localhost')).every((a) => !plain.isPublic(a.address))).toBe(true);
  });

  it('refuses a bad value and any value under NODE_ENV=production, naming the setting', () => {
    expect(() => egressResolution({ ENVRUN_EGRESS_TEST_RESOLVE: '{"hosts": {"a": ["nope"]}}' })).toThrow(
      /ENVRUN_EGRESS_TEST_RESOLVE: must be/,
    );
    expect(() => egressResolution({ ENVRUN_EGRESS_TEST_RESOLVE: 'x' })).toThrow(/ENVRUN_EGRESS_TEST_RESOLVE: not JSON/);
    const production = { NODE_ENV: 'production', ENVRUN_EGRESS_TEST_RESOLVE: setting };
    expect(() => egressResolution(production)).toThrow(ConfigError);
    expect(() => egressResolution(production)).toThrow(/ENVRUN_EGRESS_TEST_RESOLVE/);
    expect(() => loadConfig(production)).toThrow(ConfigError);
    expect(() => loadConfig(production)).toThrow(/ENVRUN_EGRESS_TEST_RESOLVE.*production/);
    expect(() => loadConfig({ NODE_ENV: 'production' })).not.toThrow();
  });
});

/** The first bytes Node's TLS client sends (its ClientHello). */
async function clientHello(servername: string | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => {
      socket.once('data', (chunk) => {
        resolve(chunk);
        socket.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      const raw = netConnect(port, '127.0.0.1', () => {
        tlsConnect({ socket: raw, servername: servername ?? '', rejectUnauthorized: false }).on('error', () => {});
      });
      raw.on('error', () => {});
    });
    server.on('error', reject);
  });
}
