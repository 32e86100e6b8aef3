import { ProviderKey } from '../../contracts/index.js';
import { checkedPlugin } from './checked.js';
import type { EnvRunPlugin } from './types.js';

/** Plugins by key. A duplicate key is refused: two plugins must never answer for one key. */
export class PluginRegistry {
  private readonly plugins = new Map<string, EnvRunPlugin>();

  constructor(plugins: EnvRunPlugin[] = []) {
    for (const p of plugins) this.register(p);
  }

  register(plugin: EnvRunPlugin): void {
    const key = ProviderKey.safeParse(plugin.key);
    if (!key.success) throw new Error(`plugin key ${JSON.stringify(plugin.key)} must match ^[a-z0-9][a-z0-9._-]*$`);
    if (this.plugins.has(plugin.key)) throw new Error(`duplicate plugin key "${plugin.key}"`);
    this.plugins.set(plugin.key, checkedPlugin(plugin));
  }

  get(key: string): EnvRunPlugin | undefined {
    return this.plugins.get(key);
  }

  keys(): string[] {
    return [...this.plugins.keys()];
  }
}
