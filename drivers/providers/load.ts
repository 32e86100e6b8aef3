// The providers of a process: the built-in ones plus modules named by
// `ENVRUN_PROVIDER_MODULES=./my-provider.js,/opt/x/provider.mjs`. A module exports `createProvider({ dataDir })`
// (default or named) returning a SandboxProvider, or a `provider` object. Both the worker and the admin
// client (which probes environments and releases leases in its own process) build their registry here.
// A module declares the contract version it implements (`contractVersion: 2`); one that declares none is
// version 1 and is adapted here (`fromV1`), so the registry holds version 2 providers only.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ProviderKey } from '../../contracts/index.js';
import { createBubblewrapProvider } from './bubblewrap/index.js';
import { checkedProvider, checkedReply } from './checked.js';
import type {
  LeaseCallContext,
  ProviderCallContext,
  ProviderCallContextV1,
  SandboxProvider,
  SandboxProviderV1,
} from './contract.js';
import { createFakeProvider } from './fake.js';
import type { PluginLogger } from './paperclip/rpc.js';
import type { EgressBroker } from '../egress/broker.js';

/** Sandbox providers by key. A duplicate key is refused: two providers must never answer for one key. */
export class ProviderRegistry {
  private readonly providers = new Map<string, SandboxProvider<any>>();
  private readonly sources = new Map<string, string>();
  private readonly closers: (() => Promise<void>)[] = [];

  constructor(providers: SandboxProvider<any>[] = []) {
    for (const p of providers) this.register(p);
  }

  /** `source` says where the provider came from, in errors: a module's path, a plugin package. */
  register(provider: SandboxProvider<any>, source = `built-in provider "${provider.key}"`): void {
    const key = ProviderKey.safeParse(provider.key);
    if (!key.success) throw new Error(`provider key ${JSON.stringify(provider.key)} must match ^[a-z0-9][a-z0-9._-]*$`);
    if (provider.contractVersion !== 2)
      throw new Error(
        `provider "${provider.key}" is not a contract version 2 provider (adapt a version 1 one with fromV1)`,
      );
    if (this.providers.has(provider.key))
      throw new Error(
        `duplicate sandbox provider key "${provider.key}": ${source} and ${this.sources.get(provider.key)}`,
      );
    this.providers.set(provider.key, checkedProvider(provider));
    this.sources.set(provider.key, source);
  }

  /** Where the provider of `key` came from, or null when there is none. */
  sourceOf(key: string): string | null {
    return this.sources.get(key) ?? null;
  }

  /** Runs `stop` at close(): what providers started (a Paperclip plugin's worker processes) stops with them. */
  onClose(stop: () => Promise<void>): void {
    this.closers.push(stop);
  }

  async close(): Promise<void> {
    await Promise.all(this.closers.splice(0).map((stop) => stop()));
  }

  get(key: string): SandboxProvider<any> | undefined {
    return this.providers.get(key);
  }

  keys(): string[] {
    return [...this.providers.keys()];
  }
}

export interface ProviderModuleOptions {
  dataDir: string;
}

const REQUIRED = [
  'validateConfig',
  'probe',
  'acquireLease',
  'resumeLease',
  'releaseLease',
  'destroyLease',
  'realizeWorkspace',
  'execute',
] as const;

/** The contract versions a module may declare; none declared is version 1. */
const SUPPORTED_VERSIONS = [1, 2] as const;

const V1ProbeSchema = z.object({ ok: z.boolean(), diagnostics: z.array(z.string()) });
const V1ReleaseSchema = z
  .object({ syncBack: z.record(z.string(), z.unknown()).optional() })
  .strict()
  .optional();

/** The version 1 context of a call: its own fields, plus everything version 2 carries (extra fields harm no one). */
function v1Context<T extends ProviderCallContext>(ctx: T): Omit<T, 'lease'> & ProviderCallContextV1 {
  const { lease: _lease, ...rest } = ctx as T & { lease?: unknown };
  return rest;
}
const withLeaseId = <T extends LeaseCallContext>(ctx: T) => ({
  ...v1Context(ctx),
  providerLeaseId: ctx.lease.providerLeaseId,
});

/**
 * A version 1 provider as a version 2 one: later calls get `providerLeaseId` from the lease, a sync
 * `validateConfig` normalizes nothing and warns of nothing, string diagnostics are errors when the probe
 * failed and information otherwise, and release and destroy report no termination receipt.
 */
export function fromV1<C>(p: SandboxProviderV1<C>): SandboxProvider<C> {
  const k = p.key;
  return {
    contractVersion: 2,
    key: p.key,
    ...(p.hostBound ? { hostBound: true } : {}),
    validateConfig: async (config) => ({ config: p.validateConfig(config), warnings: [] }),
    probe: async (config) => {
      const r = checkedReply(k, 'probe', V1ProbeSchema, await p.probe(config));
      const severity = r.ok ? 'info' : 'error';
      return { ok: r.ok, diagnostics: r.diagnostics.map((message) => ({ severity, message })) };
    },
    acquireLease: (config, ctx) => p.acquireLease(config, v1Context(ctx)),
    resumeLease: (config, ctx) => p.resumeLease(config, withLeaseId(ctx)),
    releaseLease: async (config, ctx) => {
      const r = checkedReply(
        k,
        'releaseLease',
        V1ReleaseSchema,
        (await p.releaseLease(config, withLeaseId(ctx))) ?? undefined,
      );
      return r?.syncBack ? { syncBack: r.syncBack } : {};
    },
    destroyLease: async (config, ctx) => {
      await p.destroyLease(config, withLeaseId(ctx));
      return {};
    },
    realizeWorkspace: (config, ctx) => p.realizeWorkspace(config, withLeaseId(ctx)),
    execute: (config, ctx, request) => p.execute(config, withLeaseId(ctx), request),
    ...(p.resolveTarget
      ? {
          resolveTarget: (config: C, ctx: LeaseCallContext & { cwd: string }) =>
            p.resolveTarget!(config, withLeaseId(ctx)),
        }
      : {}),
  };
}

/** A provider of either version as a version 2 one; an unknown version is refused, naming it. */
export function asContractV2(
  provider: SandboxProvider<any> | SandboxProviderV1<any>,
  from = 'it',
): SandboxProvider<any> {
  const version = (provider as { contractVersion?: unknown }).contractVersion ?? 1;
  if (!SUPPORTED_VERSIONS.includes(version as 1 | 2))
    throw new Error(
      `provider "${provider.key}" from ${from} declares contractVersion ${JSON.stringify(version)}; this envrun supports ${SUPPORTED_VERSIONS.join(' and ')}`,
    );
  return version === 2 ? (provider as SandboxProvider<any>) : fromV1(provider as SandboxProviderV1<any>);
}

/** Loads a provider module of either contract version; what it returns is a version 2 provider. */
export async function loadProviderModule(path: string, options: ProviderModuleOptions): Promise<SandboxProvider<any>> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`provider module ${path} could not be loaded: ${(err as Error).message}`);
  }
  const factory = (
    typeof mod.createProvider === 'function'
      ? mod.createProvider
      : typeof mod.default === 'function'
        ? mod.default
        : null
  ) as ((o: ProviderModuleOptions) => unknown) | null;
  const provider = (factory ? await factory(options) : (mod.provider ?? mod.default)) as
    Partial<SandboxProvider<any>> | undefined;
  if (!provider || typeof provider !== 'object' || typeof provider.key !== 'string') {
    throw new Error(`provider module ${path} must export createProvider({dataDir}) or a provider object with a key`);
  }
  // Both versions name the same methods (resolveTarget optional); what they take and return differs.
  const missing = REQUIRED.filter((m) => typeof provider[m] !== 'function');
  if (missing.length) throw new Error(`provider "${provider.key}" from ${path} lacks ${missing.join(', ')}`);
  return asContractV2(provider as SandboxProvider<any>, path);
}

/**
 * The built-in providers: fake (deterministic, for tests and demos) and bubblewrap (a real local sandbox).
 * `egress` is the worker's egress proxy (drivers/egress/supervisor.ts), for bubblewrap's `network: "allowlist"`;
 * its caller stops it.
 */
export function createProviders(config: { dataDir: string; egress?: EgressBroker | undefined }): ProviderRegistry {
  return new ProviderRegistry([
    createFakeProvider({ rootDir: join(config.dataDir, 'sandboxes', 'fake') }),
    createBubblewrapProvider({
      rootDir: join(config.dataDir, 'sandboxes', 'bubblewrap'),
      ...(config.egress ? { egress: config.egress } : {}),
    }),
  ]);
}

/**
 * The built-in providers plus those loaded from ENVRUN_PROVIDER_MODULES and the Paperclip plugin packages of
 * ENVRUN_PAPERCLIP_PLUGINS (their worker processes start here; `close()` stops them); a duplicate key fails
 * the start, naming both.
 */
export async function loadProviders(
  config: { dataDir: string; providerModules: string[]; paperclipPlugins?: string[] | undefined },
  options: { logger?: PluginLogger; egress?: EgressBroker } = {},
): Promise<ProviderRegistry> {
  const registry = createProviders({ dataDir: config.dataDir, egress: options.egress });
  for (const path of config.providerModules) {
    registry.register(await loadProviderModule(path, { dataDir: config.dataDir }), path);
  }
  if (config.paperclipPlugins?.length) {
    // Imported only when configured: a worker without Paperclip plugins does not load the host.
    const { loadPaperclipPlugins } = await import('./paperclip/load.js');
    const loaded = await loadPaperclipPlugins(config.paperclipPlugins, {
      dataDir: config.dataDir,
      holderOf: (key) => registry.sourceOf(key),
      ...(options.logger ? { logger: options.logger } : {}),
    });
    registry.onClose(loaded.stop);
    try {
      for (const { provider, source } of loaded.providers) registry.register(provider, source);
    } catch (err) {
      await registry.close();
      throw err;
    }
  }
  return registry;
}
