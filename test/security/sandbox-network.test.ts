// Attacks on the host's own services from inside the sandbox: the suite's Temporal frontend and its
// PostgreSQL listen on the host's loopback, as a worker's neighbours do.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import {
  callContext,
  hasBwrap,
  openSandbox,
  portOf,
  sandboxConfig,
  sandboxProvider,
  type Sandbox,
} from '../support/sandbox.js';

const ports = () => ({ temporal: portOf(inject('temporalAddress')), postgres: portOf(inject('embeddedPgUrl')) });

/** A shell line that prints REACHED <host>:<port> when a TCP connection succeeds. */
const probe = (host: string, port: number) =>
  `timeout 3 bash -c 'echo > /dev/tcp/${host}/${port}' 2>/dev/null && echo REACHED ${host}:${port}`;

function reachableFromHost(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

const opened: Sandbox[] = [];
async function open(network: 'none' | 'outbound' | 'host'): Promise<Sandbox> {
  const box = await openSandbox({ network });
  opened.push(box);
  return box;
}

beforeAll(async () => {
  // The attack means something only if the services are there.
  for (const port of Object.values(ports())) expect(await reachableFromHost(port)).toBe(true);
});
afterAll(async () => {
  delete process.env.ENVRUN_ALLOW_HOST_NETWORK;
  for (const box of opened) await box.close();
});

describe.skipIf(!hasBwrap())('bubblewrap sandbox: network', () => {
  it("none (the default): only loopback, the host's 127.0.0.1 services unreachable", async () => {
    const box = await open('none');
    const { temporal, postgres } = ports();
    const res = await box.sh(
      [probe('127.0.0.1', temporal), probe('127.0.0.1', postgres), probe('::1', postgres), 'cat /proc/net/dev'].join(
        '\n',
      ),
    );
    expect(res.stdout).not.toContain('REACHED');
    expect(res.stdout).not.toMatch(/^\s*(eth|tap|ens|enp)\w*:/m);
  });

  it("outbound: its own namespace with a user-mode stack; the host's 127.0.0.1 (directly or via the gateway) unreachable", async () => {
    const box = await open('outbound');
    const { temporal, postgres } = ports();
    const res = await box.sh(
      [
        probe('127.0.0.1', temporal),
        probe('127.0.0.1', postgres),
        probe('10.0.2.2', temporal),
        probe('10.0.2.2', postgres),
        probe('::1', postgres),
        'cat /proc/net/dev /proc/net/route',
      ].join('\n'),
    );
    expect(res.stdout, JSON.stringify(res)).not.toContain('REACHED');
    expect(res.stdout, JSON.stringify(res)).toMatch(/^\s*tap0:/m); // slirp4netns's interface
    expect(res.stdout).toMatch(/^tap0\s+00000000\s/m); // and a default route through it
  });

  it("the old `network: true` means outbound, not the host's network", async () => {
    const provider = await sandboxProvider();
    expect((await provider.validateConfig({ provider: 'bubblewrap', network: true })).config).toMatchObject({
      network: 'outbound',
    });
    expect((await provider.validateConfig({ provider: 'bubblewrap', network: false })).config).toMatchObject({
      network: 'none',
    });
  });

  it('host is refused without ENVRUN_ALLOW_HOST_NETWORK=1, naming config.network', async () => {
    delete process.env.ENVRUN_ALLOW_HOST_NETWORK;
    const provider = await sandboxProvider();
    const { config } = await provider.validateConfig(sandboxConfig({ network: 'host' }));
    const ctx = callContext('r');
    await expect(
      provider.acquireLease(config, { ...ctx, idempotencyKey: 'host-refused', reuseKey: null }),
    ).rejects.toMatchObject({
      name: 'NonRetryableError',
      message: expect.stringContaining('config.network'),
    });
    await expect(
      provider.execute(
        config,
        { ...ctx, lease: { providerLeaseId: 'bwrap://never-made', metadata: {}, expiresAt: null } },
        { command: 'true', args: [], env: {}, timeoutMs: 5000 },
      ),
    ).rejects.toMatchObject({
      name: 'NonRetryableError',
    });
    const probed = await provider.probe(config, { companyId: ctx.companyId, environmentId: ctx.environmentId });
    expect(probed.ok).toBe(false);
    expect(probed.diagnostics.at(-1)).toEqual({
      severity: 'error',
      message: 'network "host" is not allowed on this worker (ENVRUN_ALLOW_HOST_NETWORK=1)',
    });
  });

  it('host, when the worker allows it, shares the host network (and so reaches its 127.0.0.1 services)', async () => {
    process.env.ENVRUN_ALLOW_HOST_NETWORK = '1';
    try {
      const box = await open('host');
      const { temporal, postgres } = ports();
      const res = await box.sh([probe('127.0.0.1', temporal), probe('127.0.0.1', postgres)].join('\n'));
      expect(res.stdout).toContain(`REACHED 127.0.0.1:${temporal}`);
      expect(res.stdout).toContain(`REACHED 127.0.0.1:${postgres}`);
    } finally {
      delete process.env.ENVRUN_ALLOW_HOST_NETWORK;
    }
  });
});
