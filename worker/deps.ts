// The real dependencies of the activities: the store, the providers and the drivers.
import { createDrivers } from '../drivers/registry.js';
import type { ActivityDeps } from '../activities/index.js';
import { loadProviders } from '../drivers/providers/load.js';
import type { ProviderRegistry } from '../drivers/providers/registry.js';
import { openDatabase, resolveDatabaseUrl, type Database } from '../store/db.js';
import { Store } from '../store/store.js';
import { loadTenancy } from '../drivers/tenancy.js';
import type { EnvRunConfig } from './config.js';

export interface RuntimeDeps extends ActivityDeps {
  database: Database;
  providers: ProviderRegistry;
  close(): Promise<void>;
}

export async function createRuntimeDeps(
  config: Pick<EnvRunConfig, 'databaseUrl' | 'dataDir' | 'provisionTimeoutMs' | 'providerModules'>,
  options: { poolSize?: number; log?: (line: string) => void } = {},
): Promise<RuntimeDeps> {
  const tenancy = loadTenancy(process.env, config.dataDir);
  const providers = await loadProviders(config);
  const url = await resolveDatabaseUrl({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, log: options.log });
  const database = await openDatabase(url, options.poolSize ?? 10);
  return {
    database,
    providers,
    store: new Store(database.db),
    drivers: createDrivers(providers),
    provisionTimeoutMs: config.provisionTimeoutMs,
    tenancy,
    close: () => database.close(),
  };
}
