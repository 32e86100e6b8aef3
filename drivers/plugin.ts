// The plugin driver: envrun holds the lease; the plugin runs the agent itself, so there is nothing to
// realize and no execution target (docs/design.md).
import { PluginDriverConfig, describeZodError } from '../contracts/index.js';
import { NonRetryableError } from './errors.js';
import type { EnvironmentDriver } from './types.js';
import { providerOf } from '../leases/policy.js';

export function createPluginDriver(): EnvironmentDriver {
  const parse = (config: Record<string, unknown>) => {
    const parsed = PluginDriverConfig.safeParse(config);
    if (!parsed.success) throw new NonRetryableError(describeZodError(parsed.error, 'config'));
    return parsed.data;
  };
  return {
    driver: 'plugin',
    targetIsLocal: () => true, // a plugin lease has no target: nothing to reach
    providerOf: (environment) => providerOf(environment.driver, environment.config),
    validateConfig: parse,
    async acquire(_ctx, { environment, request }) {
      const config = parse(environment.config);
      return {
        provider: config.pluginKey,
        providerLeaseId: `plugin://${config.pluginKey}/${config.driverKey}/${request.heartbeatRunId}`,
        metadata: { pluginKey: config.pluginKey, driverKey: config.driverKey },
        expiresAt: null,
      };
    },
    async resolveTarget() {
      return null;
    },
    async execute() {
      throw new NonRetryableError('the plugin driver has no execution target: its plugin runs commands itself');
    },
    async release() {
      // The lease row is all envrun holds for a plugin environment.
    },
  };
}
