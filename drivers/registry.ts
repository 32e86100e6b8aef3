import type { Driver } from '../contracts/index.js';
import type { ProviderRegistry } from './providers/load.js';
import { PluginRegistry } from './plugins/registry.js';
import { createLocalDriver } from './local.js';
import { createPluginDriver } from './plugin.js';
import { createSandboxDriver } from './sandbox.js';
import { createSshDriver } from './ssh/index.js';
import type { EnvironmentDriver } from './types.js';

export type DriverRegistry = Partial<Record<Driver, EnvironmentDriver>>;

/** The drivers this worker offers; plugin environments need their plugin in `plugins` (none by default). */
export function createDrivers(
  providers: ProviderRegistry,
  plugins: PluginRegistry = new PluginRegistry(),
): DriverRegistry {
  return {
    local: createLocalDriver(),
    ssh: createSshDriver(),
    sandbox: createSandboxDriver(providers),
    plugin: createPluginDriver(plugins),
  };
}
