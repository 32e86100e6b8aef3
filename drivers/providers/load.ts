// The providers of a process: the built-in ones plus modules named by
// `ENVRUN_PROVIDER_MODULES=./my-provider.js,/opt/x/provider.mjs`. A module exports `createProvider({ dataDir })`
// (default or named) returning a SandboxProvider, or a `provider` object. Both the worker and the admin
// client (which probes environments and releases leases in its own process) build their registry here.
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ProviderKey } from '../../contracts/index.js';
import { createBubblewrapProvider } from './bubblewrap/index.js';
import { checkedProvider } from './checked.js';
import type { SandboxProvider } from './contract.js';
import { createFakeProvider } from './fake.js';

/** Sandbox providers by key. A duplicate key is refused: two providers must never answer for one key. */
export class ProviderRegistry {
  private readonly providers = new Map<string, SandboxProvider<any>>();

  constructor(providers: SandboxProvider<any>[] = []) {
    for (const p of providers) this.register(p);
  }

  register(provider: SandboxProvider<any>): void {
    const key = ProviderKey.safeParse(provider.key);
    if (!key.success) throw new Error(`provider key ${JSON.stringify(provider.key)} must match ^[a-z0-9][a-z0-9._-]*$`);
    if (this.providers.has(provider.key)) throw new Error(`duplicate sandbox provider key "${provider.key}"`);
    this.providers.set(provider.key, checkedProvider(provider));
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
  const missing = REQUIRED.filter((m) => typeof provider[m] !== 'function');
  if (missing.length) throw new Error(`provider "${provider.key}" from ${path} lacks ${missing.join(', ')}`);
  return provider as SandboxProvider<any>;
}

/** The built-in providers: fake (deterministic, for tests and demos) and bubblewrap (a real local sandbox). */
export function createProviders(config: { dataDir: string }): ProviderRegistry {
  return new ProviderRegistry([
    createFakeProvider({ rootDir: join(config.dataDir, 'sandboxes', 'fake') }),
    createBubblewrapProvider({ rootDir: join(config.dataDir, 'sandboxes', 'bubblewrap') }),
  ]);
}

/** The built-in providers plus those loaded from ENVRUN_PROVIDER_MODULES; a duplicate key fails the start. */
export async function loadProviders(config: { dataDir: string; providerModules: string[] }): Promise<ProviderRegistry> {
  const registry = createProviders(config);
  for (const path of config.providerModules) {
    registry.register(await loadProviderModule(path, { dataDir: config.dataDir }));
  }
  return registry;
}
