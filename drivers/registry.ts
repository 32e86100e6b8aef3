import type { Driver } from '../contracts/index.js';
import type { ProviderRegistry } from './providers/registry.js';
import { createLocalDriver } from './local.js';
import { createPluginDriver } from './plugin.js';
import { createSandboxDriver } from './sandbox.js';
import { createSshDriver } from './ssh.js';
import type { EnvironmentDriver } from './types.js';

export type DriverRegistry = Partial<Record<Driver, EnvironmentDriver>>;

/** The drivers this worker offers. */
export function createDrivers(providers: ProviderRegistry): DriverRegistry {
  return {
    local: createLocalDriver(),
    ssh: createSshDriver(),
    sandbox: createSandboxDriver(providers),
    plugin: createPluginDriver(),
  };
}
