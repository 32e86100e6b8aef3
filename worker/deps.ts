// The real dependencies of the activities: the store, the providers, the plugins and the drivers.
import { createDrivers } from '../drivers/registry.js';
import type { ActivityDeps } from '../activities/index.js';
import { loadProviders } from '../drivers/providers/load.js';
import { createEgressSupervisor } from '../drivers/egress/supervisor.js';
import type { ProviderRegistry } from '../drivers/providers/load.js';
import type { PluginLogger } from '../drivers/providers/paperclip/rpc.js';
import { loadPlugins } from '../drivers/plugins/load.js';
import type { PluginRegistry } from '../drivers/plugins/registry.js';
import { openDatabase, resolveDatabaseUrl, type Database } from '../store/db.js';
import { Store } from '../store/store.js';
import { loadTenancy } from '../config/tenancy.js';
import type { EnvRunConfig } from './config.js';
import { egressAuditSink } from './egress-audit.js';

export interface RuntimeDeps extends ActivityDeps {
  database: Database;
  providers: ProviderRegistry;
  plugins: PluginRegistry;
  close(): Promise<void>;
}

export async function createRuntimeDeps(
  config: Pick<EnvRunConfig, 'databaseUrl' | 'dataDir' | 'provisionTimeoutMs' | 'providerModules' | 'pluginModules'> &
    Partial<Pick<EnvRunConfig, 'hostId' | 'paperclipPlugins'>>,
  options: { poolSize?: number; log?: (line: string) => void; logger?: PluginLogger } = {},
): Promise<RuntimeDeps> {
  const tenancy = loadTenancy(process.env, config.dataDir);
  // One egress proxy per worker, started at the first `network: "allowlist"` command; audit rows go to the
  // store once it is open.
  const egress = createEgressSupervisor(options.log ? { log: options.log } : {});
  const providers = await loadProviders(config, { ...(options.logger ? { logger: options.logger } : {}), egress });
  let database: Database;
  let plugins: PluginRegistry;
  try {
    plugins = await loadPlugins(config);
    const url = await resolveDatabaseUrl({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      log: options.log,
    });
    database = await openDatabase(url, options.poolSize ?? 10);
  } catch (err) {
    await providers.close(); // the Paperclip plugins' worker processes
    await egress.stop();
    throw err;
  }
  const store = new Store(database.db);
  egress.setAuditSink(egressAuditSink(store)); // and denials counted as envrun_egress_denied
  return {
    database,
    providers,
    plugins,
    store,
    drivers: createDrivers(providers, plugins),
    provisionTimeoutMs: config.provisionTimeoutMs,
    ...(config.hostId ? { hostId: config.hostId } : {}),
    tenancy,
    close: async () => {
      await egress.stop(); // its last audit rows go to the store first
      await database.close();
      await providers.close();
    },
  };
}
