// The plugins of a process: the modules named by `ENVRUN_PLUGIN_MODULES=./my-plugin.mjs,/opt/x/plugin.mjs`
// (there are no built-in ones). A module exports `createPlugin({ dataDir })` (default or named) returning an
// EnvRunPlugin (drivers/plugins/types.ts), or a `plugin` object. Both the worker and the admin client
// (which probes environments and releases leases in its own process) build their registry here.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PluginRegistry } from './registry.js';
import type { EnvRunPlugin } from './types.js';

export interface PluginModuleOptions {
  dataDir: string;
}

const REQUIRED = ['acquire', 'release'] as const;
const OPTIONAL = ['validateConfig', 'probe', 'realize', 'resolveTarget'] as const;

export async function loadPluginModule(path: string, options: PluginModuleOptions): Promise<EnvRunPlugin> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`plugin module ${path} could not be loaded: ${(err as Error).message}`);
  }
  const factory = (
    typeof mod.createPlugin === 'function' ? mod.createPlugin : typeof mod.default === 'function' ? mod.default : null
  ) as ((o: PluginModuleOptions) => unknown) | null;
  const plugin = (factory ? await factory(options) : (mod.plugin ?? mod.default)) as Partial<EnvRunPlugin> | undefined;
  if (!plugin || typeof plugin !== 'object' || typeof plugin.key !== 'string') {
    throw new Error(`plugin module ${path} must export createPlugin({dataDir}) or a plugin object with a key`);
  }
  const missing = REQUIRED.filter((m) => typeof plugin[m] !== 'function');
  if (missing.length) throw new Error(`plugin "${plugin.key}" from ${path} lacks ${missing.join(', ')}`);
  const wrong = OPTIONAL.filter((m) => plugin[m] !== undefined && typeof plugin[m] !== 'function');
  if (wrong.length) throw new Error(`plugin "${plugin.key}" from ${path}: ${wrong.join(', ')} must be functions`);
  return plugin as EnvRunPlugin;
}

/** The plugins loaded from ENVRUN_PLUGIN_MODULES; a duplicate key fails the start. */
export async function loadPlugins(config: { dataDir: string; pluginModules: string[] }): Promise<PluginRegistry> {
  const registry = new PluginRegistry();
  for (const path of config.pluginModules) {
    registry.register(await loadPluginModule(path, { dataDir: config.dataDir }));
  }
  return registry;
}
