// What a client needs from the environment: where Temporal is (address, namespace, TLS, API key and
// profiles follow @temporalio/envconfig's conventions, so Temporal Cloud works too), the task queue, and,
// for the admin, the database and the provider and plugin modules. Every variable is parsed by the one
// schema of config/settings.ts; the worker's configuration (worker/config.ts) reads the rest of it, so a
// variable reads the same in the worker, the CLI and the library.
import { loadClientConnectConfig, type ClientConnectConfig } from '@temporalio/envconfig';
import { resolve } from 'node:path';
import { ConfigError, loadSettings, type Settings } from '../config/settings.js';

export { ConfigError, hostPort } from '../config/settings.js';

/** The variables a client reads (the worker reads them all). */
export const CLIENT_SETTINGS = [
  'TEMPORAL_ADDRESS',
  'TEMPORAL_NAMESPACE',
  'TEMPORAL_API_KEY',
  'TEMPORAL_TLS',
  'TEMPORAL_TLS_CLIENT_CERT_PATH',
  'TEMPORAL_TLS_CLIENT_CERT_DATA',
  'TEMPORAL_TLS_CLIENT_KEY_PATH',
  'TEMPORAL_TLS_CLIENT_KEY_DATA',
  'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
  'TEMPORAL_TLS_SERVER_CA_CERT_DATA',
  'TEMPORAL_TLS_SERVER_NAME',
  'TEMPORAL_TLS_DISABLE_HOST_VERIFICATION',
  'TEMPORAL_CONFIG_FILE',
  'TEMPORAL_PROFILE',
  'ENVRUN_TASK_QUEUE',
  'DATABASE_URL',
  'ENVRUN_DATA_DIR',
  'ENVRUN_PROVIDER_MODULES',
  'ENVRUN_PLUGIN_MODULES',
  'ENVRUN_PAPERCLIP_PLUGINS',
] as const;
export type ClientSettings = Pick<Settings, (typeof CLIENT_SETTINGS)[number]>;

/** Options for a Temporal connection, as envconfig produces them (the client's and the worker's alike). */
export type TemporalConnectionOptions = ClientConnectConfig['connectionOptions'];

export interface ClientConfig {
  temporal: { connection: TemporalConnectionOptions; namespace: string; address: string };
  taskQueue: string;
  databaseUrl: string | undefined;
  dataDir: string;
  /** Sandbox provider modules to load (ENVRUN_PROVIDER_MODULES, comma-separated paths). */
  providerModules: string[];
  /** Plugin modules to load (ENVRUN_PLUGIN_MODULES, comma-separated paths). */
  pluginModules: string[];
  /** Paperclip plugin packages whose sandbox providers to load (ENVRUN_PAPERCLIP_PLUGINS, comma-separated folders). */
  paperclipPlugins?: string[];
}

/** The client's part of the configuration, from already parsed variables (`env` is read by envconfig). */
export function clientConfigFrom(e: ClientSettings, env: NodeJS.ProcessEnv): ClientConfig {
  let connect;
  try {
    connect = loadClientConnectConfig({ overrideEnvVars: stringEnv(env) });
  } catch (err) {
    throw new ConfigError(`invalid Temporal client configuration: ${(err as Error).message}`);
  }
  const connection: TemporalConnectionOptions = { ...connect.connectionOptions };
  connection.address ??= e.TEMPORAL_ADDRESS ?? 'localhost:7233';
  const namespace = connect.namespace ?? e.TEMPORAL_NAMESPACE ?? 'default';
  return {
    temporal: { connection, namespace, address: connection.address },
    taskQueue: e.ENVRUN_TASK_QUEUE,
    databaseUrl: e.DATABASE_URL,
    dataDir: resolve(e.ENVRUN_DATA_DIR),
    providerModules: e.ENVRUN_PROVIDER_MODULES,
    pluginModules: e.ENVRUN_PLUGIN_MODULES,
    paperclipPlugins: e.ENVRUN_PAPERCLIP_PLUGINS,
  };
}

/** Reads and validates the client's configuration; a bad value throws a ConfigError naming the variable. */
export function loadClientConfig(env: NodeJS.ProcessEnv = process.env): ClientConfig {
  return clientConfigFrom(loadSettings(env, CLIENT_SETTINGS), env);
}

/** The variables set (a blank one counts as unset, as in the schema). */
function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter((kv): kv is [string, string] => typeof kv[1] === 'string' && kv[1].trim() !== ''),
  );
}
