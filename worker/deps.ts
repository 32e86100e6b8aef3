// The real dependencies of the activities: the store, the providers and the drivers.
import { join } from 'node:path';
import { createDrivers } from '../drivers/registry.js';
import type { ActivityDeps } from '../activities/index.js';
import { createBubblewrapProvider } from '../drivers/providers/bubblewrap.js';
import { createFakeProvider } from '../drivers/providers/fake.js';
import { loadProviderModule } from '../drivers/providers/load.js';
import { ProviderRegistry } from '../drivers/providers/registry.js';
import { openDatabase, resolveDatabaseUrl, type Database } from '../store/db.js';
import { Store } from '../store/store.js';
import type { EnvRunConfig } from './config.js';

export interface RuntimeDeps extends ActivityDeps {
  database: Database;
  providers: ProviderRegistry;
  close(): Promise<void>;
}

/** The built-in providers: fake (deterministic, for tests and demos) and bubblewrap (a real local sandbox). */
export function createProviders(config: Pick<EnvRunConfig, 'dataDir'>): ProviderRegistry {
  return new ProviderRegistry([
    createFakeProvider({ rootDir: join(config.dataDir, 'sandboxes', 'fake') }),
    createBubblewrapProvider({ rootDir: join(config.dataDir, 'sandboxes', 'bubblewrap') }),
  ]);
}

/** The built-in providers plus those loaded from ENVRUN_PROVIDER_MODULES; a duplicate key fails the start. */
export async function loadProviders(config: Pick<EnvRunConfig, 'dataDir' | 'providerModules'>): Promise<ProviderRegistry> {
  const registry = createProviders(config);
  for (const path of config.providerModules) registry.register(await loadProviderModule(path, { dataDir: config.dataDir }));
  return registry;
}

export async function createRuntimeDeps(
  config: Pick<EnvRunConfig, 'databaseUrl' | 'dataDir' | 'provisionTimeoutMs' | 'providerModules'>,
  options: { poolSize?: number; log?: (line: string) => void } = {},
): Promise<RuntimeDeps> {
  const providers = await loadProviders(config);
  const url = await resolveDatabaseUrl({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, log: options.log });
  const database = await openDatabase(url, options.poolSize ?? 10);
  return {
    database,
    providers,
    store: new Store(database.db),
    drivers: createDrivers(providers),
    provisionTimeoutMs: config.provisionTimeoutMs,
    close: () => database.close(),
  };
}
