// The per-lease certificate authority of credential brokering: the egress proxy terminates TLS to an inject
// host with a leaf it signs, and the sandbox trusts only this CA for it. ECDSA P-256, valid a few days, and
// name-constrained to the lease's inject hosts, so that even a leaked key could not vouch for another host.
// The private key stays in the proxy (it never enters the sandbox).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { normalizeHostName } from '../../contracts/egress.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export interface LeaseCa {
  certPem: string;
  keyPem: string;
}

/** A leaf certificate and key for one host, as tls.createSecureContext takes them. */
export interface LeafCert {
  certPem: string;
  keyPem: string;
}

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
/** How long a lease CA (and its leaves) is valid; a lease that outlives it gets a new CA when its route reopens. */
const CA_VALIDITY_MS = 4 * 24 * 3600_000;
/** Allowance for a client clock slightly behind the worker's. */
const SKEW_MS = 5 * 60_000;
/** CAs whose leaves are kept; the oldest is dropped beyond this. */
const MAX_CACHED_CAS = 256;

/** DER: one tag-length-value. */
function tlv(tag: number, body: Uint8Array): Uint8Array {
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Uint8Array.from([tag, ...len, ...body]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

/**
 * NameConstraints (RFC 5280 4.2.1.10): permits the DNS names given (and their subdomains) and excludes every
 * IPv4 and IPv6 address. Written here because the library's GeneralName takes no address ranges.
 */
function nameConstraints(hosts: string[]): x509.Extension {
  const subtree = (name: Uint8Array) => tlv(0x30, name);
  const dns = (host: string) => subtree(tlv(0x82, new TextEncoder().encode(host)));
  const anyAddress = (bytes: number) => subtree(tlv(0x87, new Uint8Array(bytes * 2)));
  const permitted = tlv(0xa0, concat(hosts.map(dns)));
  const excluded = tlv(0xa1, concat([anyAddress(4), anyAddress(16)]));
  return new x509.Extension('2.5.29.30', true, tlv(0x30, concat([permitted, excluded])));
}

function toPem(der: ArrayBuffer, label: string): string {
  return x509.PemConverter.encode(der, label) + '\n';
}

function hostsOf(hosts: string[]): string[] {
  const out = new Set<string>();
  for (const raw of hosts) {
    const host = normalizeHostName(raw);
    if (host === null) throw new Error(`egress CA: "${raw}" is not a DNS name`);
    out.add(host);
  }
  if (out.size === 0) throw new Error('egress CA: at least one inject host is needed');
  return [...out];
}

/** A new CA for one lease whose inject hosts are `hosts` (DNS names). */
export async function createLeaseCa(hosts: string[]): Promise<LeaseCa> {
  const names = hostsOf(hosts);
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=envrun egress lease CA ${webcrypto.randomUUID()}`,
    notBefore: new Date(now - SKEW_MS),
    notAfter: new Date(now + CA_VALIDITY_MS),
    signingAlgorithm: SIGN,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      nameConstraints(names),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem') + '\n', keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

interface CaEntry {
  cert: x509.X509Certificate;
  key: Promise<CryptoKey>;
  leaves: Map<string, Promise<LeafCert>>;
}

const cas = new Map<string, CaEntry>();

function caEntry(ca: LeaseCa): CaEntry {
  let entry = cas.get(ca.certPem);
  if (entry) return entry;
  const cert = new x509.X509Certificate(ca.certPem);
  const der = x509.PemConverter.decodeFirst(ca.keyPem);
  const key = webcrypto.subtle.importKey('pkcs8', der, EC, false, ['sign']) as Promise<CryptoKey>;
  key.catch(() => cas.delete(ca.certPem));
  entry = { cert, key, leaves: new Map() };
  cas.set(ca.certPem, entry);
  if (cas.size > MAX_CACHED_CAS) cas.delete(cas.keys().next().value as string);
  return entry;
}

async function issueLeaf(entry: CaEntry, host: string): Promise<LeafCert> {
  const signingKey = await entry.key;
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${host}`,
    issuer: entry.cert.subject,
    notBefore: new Date(Math.max(Date.now() - SKEW_MS, entry.cert.notBefore.getTime())),
    notAfter: entry.cert.notAfter,
    signingAlgorithm: SIGN,
    publicKey: keys.publicKey,
    signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: host }]),
      await x509.AuthorityKeyIdentifierExtension.create(entry.cert.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem') + '\n', keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

/** The leaf for `host` signed by `ca`; made once per CA and host. */
export function leafFor(ca: LeaseCa, host: string): Promise<LeafCert> {
  const name = normalizeHostName(host);
  if (name === null) return Promise.reject(new Error(`egress CA: "${host}" is not a DNS name`));
  let entry: CaEntry;
  try {
    entry = caEntry(ca);
  } catch {
    return Promise.reject(new Error('egress CA: the lease CA could not be read'));
  }
  let leaf = entry.leaves.get(name);
  if (!leaf) {
    leaf = issueLeaf(entry, name);
    entry.leaves.set(name, leaf);
    leaf.catch(() => entry.leaves.delete(name));
  }
  return leaf;
}
