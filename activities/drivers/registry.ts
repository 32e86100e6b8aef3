import type { Driver } from '../../contracts/index.js';
import type { ProviderRegistry } from '../providers/registry.js';
import { createLocalDriver } from './local.js';
import { createPluginDriver } from './plugin.js';
import { createSandboxDriver } from './sandbox.js';
import type { EnvironmentDriver } from './types.js';

export type DriverRegistry = Partial<Record<Driver, EnvironmentDriver>>;

/** The drivers this worker offers. ssh arrives with its own issue; until then an ssh environment is unsupported. */
export function createDrivers(providers: ProviderRegistry): DriverRegistry {
  return {
    local: createLocalDriver(),
    sandbox: createSandboxDriver(providers),
    plugin: createPluginDriver(),
  };
}
