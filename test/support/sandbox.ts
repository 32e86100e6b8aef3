// A real bubblewrap sandbox for the attack tests in test/security: the provider's own public functions
// (acquire, realize, execute, release), no mocks, under the suite's temporary root.
//
// ENVRUN_SANDBOX_TEST_PROVIDER=<module> points the suite at another implementation of the provider (for
// instance the pre-hardening one, `git show <rev>:drivers/providers/bubblewrap.ts`); with
// ENVRUN_SANDBOX_TEST_LEGACY_CONFIG=1 the network mode is given as the old boolean.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inject } from 'vitest';
import type { ExecResult } from '../../contracts/index.js';
import type { BubblewrapProviderOptions } from '../../drivers/providers/bubblewrap/index.js';
import type {
  ProviderCallContext,
  ProviderLease,
  ProviderReleaseReport,
  SandboxProvider,
  SandboxProviderV1,
} from '../../drivers/providers/contract.js';
import { asContractV2 } from '../../drivers/providers/load.js';

type Factory = (options: BubblewrapProviderOptions) => SandboxProvider<Record<string, unknown>>;

/** The provider under test, as a contract version 2 one (an older implementation is adapted). */
async function providerFactory(): Promise<Factory> {
  const alt = process.env.ENVRUN_SANDBOX_TEST_PROVIDER;
  const mod = (alt ? await import(resolve(alt)) : await import('../../drivers/providers/bubblewrap/index.js')) as {
    createBubblewrapProvider: (
      options: BubblewrapProviderOptions,
    ) => SandboxProvider<Record<string, unknown>> | SandboxProviderV1<Record<string, unknown>>;
  };
  return (options) => asContractV2(mod.createBubblewrapProvider(options));
}

export interface Sandbox {
  /** The lease's workspace folder on the host (/workspace inside). */
  hostWorkspace: string;
  /** The local workspace it was realized from (and syncs back to). */
  local: string;
  sh(script: string, options?: { timeoutMs?: number; env?: Record<string, string> }): Promise<ExecResult>;
  close(): Promise<void>;
  /** Releases the lease, syncing the sandbox's changes back into `local` first; what the release reported. */
  closeWithSyncBack(): Promise<ProviderReleaseReport>;
}

export interface SandboxOptions {
  network?: 'none' | 'outbound' | 'host';
  limits?: Record<string, number>;
  provider?: Partial<BubblewrapProviderOptions>;
}

/** A provider call's context for a run: its identity as a real run's calls carry it. */
export function callContext(heartbeatRunId = 'run-security'): ProviderCallContext {
  return {
    companyId: 'co-security',
    environmentId: 'env-security',
    heartbeatRunId,
    leaseId: `lease-${heartbeatRunId}`,
    agentId: null,
    adapterType: 'process',
    executionWorkspaceId: null,
    issueId: null,
    requestedExpiresAt: null,
    attempt: 1,
  };
}

/** The context of a call on an acquired lease. */
export function leaseContext(
  lease: ProviderLease,
  heartbeatRunId?: string,
): ProviderCallContext & { lease: ProviderLease } {
  return { ...callContext(heartbeatRunId), lease };
}

const ctx = callContext();

export function sandboxConfig(options: SandboxOptions): Record<string, unknown> {
  const network = options.network ?? 'none';
  return {
    provider: 'bubblewrap',
    network: process.env.ENVRUN_SANDBOX_TEST_LEGACY_CONFIG === '1' ? network !== 'none' : network,
    ...(options.limits ? { limits: options.limits } : {}),
  };
}

/** A provider over a fresh root under the suite's temporary folder (which the sandbox uid may pass). */
export async function sandboxProvider(
  options: Partial<BubblewrapProviderOptions> = {},
): Promise<SandboxProvider<Record<string, unknown>>> {
  const rootDir = join(inject('tmpRoot'), `sandboxes-${randomUUID().slice(0, 8)}`);
  mkdirSync(rootDir, { recursive: true, mode: 0o755 });
  return (await providerFactory())({ rootDir, ...options });
}

export async function openSandbox(options: SandboxOptions & { local?: string } = {}): Promise<Sandbox> {
  const provider = await sandboxProvider(options.provider);
  const { config } = await provider.validateConfig(sandboxConfig(options));
  const lease = await provider.acquireLease(config, { ...ctx, idempotencyKey: randomUUID(), reuseKey: null });
  const local = options.local ?? mkdtempSync(join(tmpdir(), 'envrun-sandbox-local-'));
  await provider.realizeWorkspace(config, { ...ctx, lease, localPath: local });
  const hostWorkspace = join(String(lease.metadata.root), 'workspace');
  return {
    hostWorkspace,
    local,
    sh: (script, o = {}) =>
      provider.execute(
        config,
        { ...ctx, lease },
        { command: 'bash', args: ['-c', script], env: o.env ?? {}, timeoutMs: o.timeoutMs ?? 30_000 },
      ),
    close: async () => {
      await provider.releaseLease(config, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: null });
    },
    closeWithSyncBack: async () =>
      provider.releaseLease(config, { ...ctx, lease, keep: false, cancelActiveWork: true, syncBackTo: local }),
  };
}

/** Host pids whose command line contains `marker` (the test's own processes excluded). */
export function hostProcessesWith(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker)) found.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return found;
}

/** host:port of a postgres:// URL or a host:port address. */
export function portOf(address: string): number {
  const url = address.includes('://') ? new URL(address) : new URL(`tcp://${address}`);
  return Number(url.port);
}

export const isRoot = () => process.getuid?.() === 0;
export const hasBwrap = () => existsSync('/usr/bin/bwrap');
