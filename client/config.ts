// What a client needs from the environment, validated with zod: where Temporal is (address, namespace, TLS,
// API key and profiles follow @temporalio/envconfig's conventions, so Temporal Cloud works too), the task
// queue, and, for the admin, the database and the provider and plugin modules. The worker's configuration
// (worker/config.ts) extends this one, so a variable reads the same in the worker, the CLI and the library.
import { loadClientConnectConfig, type ClientConnectConfig } from '@temporalio/envconfig';
import { resolve } from 'node:path';
import { z } from 'zod';
import { DEFAULT_TASK_QUEUE, describeZodError } from '../contracts/index.js';

export const hostPort = z.string().regex(/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/, 'must be host:port');

export const ClientEnvSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).max(255).optional(),
  ENVRUN_TASK_QUEUE: z.string().min(1).max(200).default(DEFAULT_TASK_QUEUE),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  ENVRUN_DATA_DIR: z.string().min(1).default('./.envrun'),
  ENVRUN_PROVIDER_MODULES: z.string().optional(),
  ENVRUN_PLUGIN_MODULES: z.string().optional(),
});

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
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment with `schema`; a bad value throws a ConfigError naming the variable. */
export function parseEnv<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv): z.output<S> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) throw new ConfigError(`invalid configuration: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/** The client's part of the configuration, from already parsed variables (`env` is read by envconfig). */
export function clientConfigFrom(e: z.output<typeof ClientEnvSchema>, env: NodeJS.ProcessEnv): ClientConfig {
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
    providerModules: modulePaths(e.ENVRUN_PROVIDER_MODULES),
    pluginModules: modulePaths(e.ENVRUN_PLUGIN_MODULES),
  };
}

/** A comma-separated list of module paths. */
function modulePaths(list: string | undefined): string[] {
  return (list ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Reads and validates the client's configuration. */
export function loadClientConfig(env: NodeJS.ProcessEnv = process.env): ClientConfig {
  return clientConfigFrom(parseEnv(ClientEnvSchema, env), env);
}

function stringEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((kv): kv is [string, string] => typeof kv[1] === 'string'));
}
