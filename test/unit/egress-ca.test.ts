// The per-lease CA of credential brokering: a P-256 CA valid a few days, its leaves, and its name constraints
// as a TLS client enforces them (a leaf for a host outside the lease's inject hosts is refused).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { createLeaseCa, leafFor, type LeafCert, type LeaseCa } from '../../drivers/egress/ca.js';

/** Completes a TLS handshake against a server presenting `leaf`, trusting only `ca`; resolves the error code or 'ok'. */
async function handshake(ca: LeaseCa, leaf: LeafCert, servername: string): Promise<string> {
  const server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (s) => s.end());
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername, ca: [ca.certPem] }, () => {
        socket.destroy();
        resolve('ok');
      });
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
  } finally {
    server.close();
  }
}

describe('egress lease CA', () => {
  it('is a P-256 CA valid a few days, and signs a leaf for an inject host', async () => {
    const ca = await createLeaseCa(['API.Example.test.', 'git.example.test']);
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(2);
    expect(days).toBeLessThan(8);

    const leaf = await leafFor(ca, 'api.example.test');
    const leafCert = new X509Certificate(leaf.certPem);
    expect(leafCert.ca).toBe(false);
    expect(leafCert.checkIssued(cert)).toBe(true);
    expect(leafCert.verify(cert.publicKey)).toBe(true);
    expect(leafCert.subjectAltName).toBe('DNS:api.example.test');
    expect(leafCert.checkHost('api.example.test')).toBe('api.example.test');
    expect(leaf.keyPem).not.toBe(ca.keyPem);
  });

  it('makes each leaf once per CA and host', async () => {
    const ca = await createLeaseCa(['api.example.test', 'git.example.test']);
    const a = await leafFor(ca, 'api.example.test');
    expect(await leafFor({ ...ca }, 'API.example.test')).toBe(a);
    expect(await leafFor(ca, 'git.example.test')).not.toBe(a);
    const other = await createLeaseCa(['api.example.test']);
    expect(await leafFor(other, 'api.example.test')).not.toBe(a);
  });

  it('is trusted by a TLS client for its hosts, and name constraints refuse any other host', async () => {
    const ca = await createLeaseCa(['api.example.test']);
    expect(await handshake(ca, await leafFor(ca, 'api.example.test'), 'api.example.test')).toBe('ok');
    // Subdomains of a permitted name are within the constraint (RFC 5280); another name is not.
    expect(await handshake(ca, await leafFor(ca, 'deep.api.example.test'), 'deep.api.example.test')).toBe('ok');
    const outside = await handshake(ca, await leafFor(ca, 'bank.example.com'), 'bank.example.com');
    // OpenSSL's "permitted subtree violation", which Node reports without a code of its own.
    expect(outside).not.toBe('ok');
  });

  it('refuses hosts that are not DNS names', async () => {
    await expect(createLeaseCa([])).rejects.toThrow(/at least one/);
    await expect(createLeaseCa(['*.example.test'])).rejects.toThrow(/"\*\.example\.test" is not a DNS name/);
    await expect(createLeaseCa(['10.0.0.1'])).rejects.toThrow(/is not a DNS name/);
    const ca = await createLeaseCa(['api.example.test']);
    await expect(leafFor(ca, '127.0.0.1')).rejects.toThrow(/is not a DNS name/);
    await expect(leafFor({ certPem: 'junk', keyPem: 'junk' }, 'api.example.test')).rejects.toThrow(/could not be read/);
  });
});
