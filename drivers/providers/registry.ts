import { ProviderKey } from '../../contracts/index.js';
import { checkedProvider } from './checked.js';
import type { SandboxProvider } from './types.js';

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
