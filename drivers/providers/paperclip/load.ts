// Paperclip plugin packages as sandbox providers: `ENVRUN_PAPERCLIP_PLUGINS=<package dir>[,…]`. Each folder is
// an npm package whose package.json has `paperclipPlugin: {manifest, worker}` (paths inside the package, as
// Paperclip installs them). The manifest is a JSON file or a module whose default export (or the module
// itself) is the manifest; the worker is `paperclipPlugin.worker`, else the manifest's `entrypoints.worker`.
// One worker process runs per package (worker.ts), and each of its manifest's `environmentDrivers` of kind
// `sandbox_provider` becomes a provider under its `driverKey`. A driver key another provider already has
// is refused before anything starts, naming both.
import { readFile } from 'node:fs/promises';
import { extname, isAbsolute, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { z } from 'zod';
import { describeZodError, ProviderKey } from '../../../contracts/index.js';
import type { SandboxProvider } from '../contract.js';
import { keepAlive } from './calls.js';
import { createPaperclipProvider } from './provider.js';
import { PluginWorker, type PluginLogger } from './worker.js';

const PackageJson = z.object({
  name: z.string().optional(),
  paperclipPlugin: z.object(
    { manifest: z.string().min(1), worker: z.string().min(1).optional() },
    { error: 'must be an object with manifest (and worker) paths' },
  ),
});

/** The part of PaperclipPluginManifestV1 (@paperclipai/shared) the host reads; the rest goes to the worker as is. */
const Manifest = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'must be lowercase letters, digits, dots, dashes or underscores'),
    apiVersion: z.literal(1, { error: 'must be 1 (the plugin API version this host speaks)' }),
    version: z.string().min(1),
    entrypoints: z
      .object({ worker: z.string().min(1) })
      .passthrough()
      .optional(),
    environmentDrivers: z
      .array(
        z
          .object({
            driverKey: z.string().min(1),
            kind: z.enum(['environment_driver', 'sandbox_provider']).optional(),
            displayName: z.string().optional(),
          })
          .passthrough(),
      )
      .default([]),
  })
  .passthrough();

export interface LoadedPaperclipPlugins {
  /** Each provider with where it came from (`Paperclip plugin <id> (<dir>)`). */
  providers: { provider: SandboxProvider<Record<string, unknown>>; source: string }[];
  /** Stops every plugin worker (shutdown, then SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

export interface LoadPaperclipOptions {
  dataDir: string;
  /** Who already holds a provider key (`built-in provider "fake"`, a module's path), or null. */
  holderOf: (key: string) => string | null;
  logger?: PluginLogger;
}

/** A path of the package's own, or an error naming the field. */
function inside(dir: string, path: string, field: string): string {
  const full = resolve(dir, path);
  const rel = relative(dir, full);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
    throw new Error(`Paperclip plugin ${dir}: ${field} ${JSON.stringify(path)} is not a file inside the package`);
  return full;
}

async function readManifest(path: string, dir: string): Promise<unknown> {
  try {
    if (extname(path) === '.json') return JSON.parse(await readFile(path, 'utf8'));
    const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    return mod.default ?? mod;
  } catch (err) {
    throw new Error(`Paperclip plugin ${dir}: its manifest ${path} could not be read: ${(err as Error).message}`);
  }
}

/** Reads one package: its manifest, worker path and sandbox-provider driver keys. Starts nothing. */
export async function readPaperclipPackage(packageDir: string) {
  const dir = resolve(packageDir);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
  } catch (err) {
    throw new Error(`Paperclip plugin ${dir}: package.json could not be read: ${(err as Error).message}`);
  }
  const pkg = PackageJson.safeParse(raw);
  if (!pkg.success) throw new Error(`Paperclip plugin ${dir}: ${describeZodError(pkg.error, 'package.json')}`);
  const manifestPath = inside(dir, pkg.data.paperclipPlugin.manifest, 'package.json paperclipPlugin.manifest');
  const parsed = Manifest.safeParse(await readManifest(manifestPath, dir));
  if (!parsed.success) throw new Error(`Paperclip plugin ${dir}: ${describeZodError(parsed.error, 'manifest')}`);
  const manifest = parsed.data;
  const workerField = pkg.data.paperclipPlugin.worker ?? manifest.entrypoints?.worker;
  if (!workerField)
    throw new Error(
      `Paperclip plugin ${dir}: neither package.json paperclipPlugin.worker nor manifest.entrypoints.worker names the worker`,
    );
  const workerPath = inside(dir, workerField, 'the worker');
  const driverKeys = manifest.environmentDrivers.filter((d) => d.kind === 'sandbox_provider').map((d) => d.driverKey);
  if (driverKeys.length === 0)
    throw new Error(
      `Paperclip plugin ${manifest.id} (${dir}): its manifest declares no environmentDrivers entry of kind "sandbox_provider"`,
    );
  for (const key of driverKeys) {
    if (!ProviderKey.safeParse(key).success)
      throw new Error(
        `Paperclip plugin ${manifest.id} (${dir}): driverKey ${JSON.stringify(key)} must match ^[a-z0-9][a-z0-9._-]*$`,
      );
  }
  return { dir, manifest, workerPath, driverKeys, source: `Paperclip plugin ${manifest.id} (${dir})` };
}

/** A logger for plugin workers when the caller has none (the admin, the CLI): warnings and errors on stderr. */
function stderrLogger(): PluginLogger {
  return pino(
    { name: 'envrun', level: 'warn', base: undefined, formatters: { level: (label) => ({ level: label }) } },
    pino.destination(2),
  );
}

/**
 * Reads every package first (a bad one, or a driver key already held, fails the load before any worker
 * starts), then starts one worker per package. A worker that does not start stops those already started.
 */
export async function loadPaperclipPlugins(
  dirs: string[],
  options: LoadPaperclipOptions,
): Promise<LoadedPaperclipPlugins> {
  const packages = [];
  const held = new Map<string, string>();
  for (const dir of dirs) {
    const pkg = await readPaperclipPackage(dir);
    for (const key of pkg.driverKeys) {
      const holder = held.get(key) ?? options.holderOf(key);
      if (holder)
        throw new Error(`sandbox provider key "${key}": ${pkg.source} declares it, and ${holder} already has it`);
      held.set(key, pkg.source);
    }
    packages.push(pkg);
  }
  const logger = options.logger ?? stderrLogger();
  const workers: PluginWorker[] = [];
  const stop = async () => {
    await keepAlive(Promise.all(workers.map((w) => w.stop())));
  };
  const providers: LoadedPaperclipPlugins['providers'] = [];
  try {
    for (const pkg of packages) {
      const worker = await keepAlive(
        PluginWorker.start({
          pluginKey: pkg.manifest.id,
          workerPath: pkg.workerPath,
          cwd: pkg.dir,
          manifest: pkg.manifest,
          logger,
          homeRoot: join(options.dataDir, 'paperclip', pkg.manifest.id, 'homes'),
        }),
      );
      workers.push(worker);
      for (const driverKey of pkg.driverKeys) {
        const stateDir = join(options.dataDir, 'paperclip', pkg.manifest.id, driverKey);
        const provider = createPaperclipProvider({ worker, pluginKey: pkg.manifest.id, driverKey, stateDir });
        providers.push({ provider, source: pkg.source });
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { providers, stop };
}
