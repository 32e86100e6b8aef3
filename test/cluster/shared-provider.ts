// The fake sandbox provider with one root for every worker host, under the key `shared`: a stand-in for a
// remote sandbox service, whose sandboxes outlive the host that made them. (The built-in `fake` keeps its
// sandboxes in the host's own ENVRUN_DATA_DIR, where a host that dies takes them along.) The cluster's
// hosts load it with ENVRUN_PROVIDER_MODULES and ENVRUN_CLUSTER_SHARED_SANDBOXES.
import { createFakeProvider, type FakeConfig } from '../../drivers/providers/fake.js';
import type { SandboxProvider } from '../../drivers/providers/contract.js';

export const SHARED_PROVIDER_MODULE = new URL(import.meta.url).pathname;

export function createSharedProvider(rootDir: string): SandboxProvider<FakeConfig> {
  const fake = createFakeProvider({ rootDir });
  return {
    ...fake,
    key: 'shared',
    hostBound: false, // one folder for every host: any worker may reach it
    validateConfig: (config) => fake.validateConfig({ ...(config as Record<string, unknown>), provider: 'fake' }),
  };
}

export function createProvider(): SandboxProvider<FakeConfig> {
  const root = process.env.ENVRUN_CLUSTER_SHARED_SANDBOXES;
  if (!root) throw new Error('ENVRUN_CLUSTER_SHARED_SANDBOXES must name the shared sandbox folder');
  return createSharedProvider(root);
}
