// Deployment settings that keep companies apart on a shared worker host: where workspaces may be, which
// secret references each company may use, which drivers and providers are enabled. Read from the
// environment by the worker (and by the admin API and CLI, which check the same rules before writing).
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, isAbsolute, relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { DRIVERS, type Driver } from '../contracts/index.js';

export class TenancyError extends Error {
  override name = 'TenancyError';
}

const SecretGrantsSchema = z.record(z.string().min(1), z.array(z.string().regex(/^(env:|file:\/)/)));

export interface Tenancy {
  /** Real paths under which a run's cwd, baseCwd and worktree path must resolve. */
  workspaceRoots: string[];
  /** Paths never usable as a workspace, whatever the roots (the worker's data folder). */
  forbidden: string[];
  /** company id (or "*") → the secret references it may use; null: unrestricted (development only). */
  secretGrants: Record<string, string[]> | null;
  drivers: ReadonlySet<Driver>;
  /** null: every provider loaded on the worker is enabled. */
  providers: ReadonlySet<string> | null;
}

const PRODUCTION_DRIVERS: Driver[] = ['ssh', 'sandbox', 'plugin'];
const PRODUCTION_PROVIDERS = ['bubblewrap'];

function list(value: string | undefined): string[] | null {
  if (value === undefined || value.trim() === '') return null;
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function realOrResolved(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/**
 * Reads the settings. Defaults: workspace roots are the process's working folder and the OS temp folder
 * (so `npm run dev` and the tests work out of the box); under NODE_ENV=production only ssh, sandbox and
 * plugin drivers and the bubblewrap provider are enabled and no secret reference is granted; elsewhere all
 * drivers and providers are enabled and, without ENVRUN_SECRET_GRANTS, any reference may be used. A bad
 * value throws naming the variable.
 */
export function loadTenancy(env: NodeJS.ProcessEnv = process.env, dataDir?: string): Tenancy {
  const production = env.NODE_ENV === 'production';
  const roots = env.ENVRUN_WORKSPACE_ROOTS?.split(':').filter(Boolean) ?? [process.cwd(), tmpdir()];
  for (const root of roots) {
    if (!isAbsolute(root)) throw new TenancyError(`ENVRUN_WORKSPACE_ROOTS: ${root} is not an absolute path`);
  }
  let grants: Record<string, string[]> | null = production ? {} : null;
  if (env.ENVRUN_SECRET_GRANTS) {
    let json: unknown;
    try {
      json = JSON.parse(env.ENVRUN_SECRET_GRANTS);
    } catch {
      throw new TenancyError('ENVRUN_SECRET_GRANTS: not JSON');
    }
    const parsed = SecretGrantsSchema.safeParse(json);
    if (!parsed.success) {
      throw new TenancyError('ENVRUN_SECRET_GRANTS: must map company ids (or "*") to lists of env:NAME / file:/path');
    }
    grants = parsed.data;
  }
  const drivers = list(env.ENVRUN_DRIVERS) ?? (production ? PRODUCTION_DRIVERS : [...DRIVERS]);
  for (const d of drivers) {
    if (!(DRIVERS as readonly string[]).includes(d)) throw new TenancyError(`ENVRUN_DRIVERS: unknown driver ${d}`);
  }
  const providers = list(env.ENVRUN_PROVIDERS) ?? (production ? PRODUCTION_PROVIDERS : null);
  return {
    workspaceRoots: roots.map(realOrResolved),
    forbidden: dataDir ? [realOrResolved(dataDir)] : [],
    secretGrants: grants,
    drivers: new Set(drivers as Driver[]),
    providers: providers ? new Set(providers) : null,
  };
}

function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * The real path of a workspace path (symlinks followed), or a TenancyError naming the field when it is
 * outside every root or inside a forbidden folder. A path that does not exist yet is checked through its
 * nearest existing parent, so a worktree to be made is held to the same rule.
 */
export function checkWorkspacePath(tenancy: Tenancy, path: string, field: string): string {
  let probe = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      const real = resolve(realpathSync(probe), ...rest);
      const allowed = tenancy.workspaceRoots.some((root) => inside(real, root));
      const refused = tenancy.forbidden.some((f) => inside(real, f));
      if (!allowed || refused)
        throw new TenancyError(`${field}: ${path} is outside the workspace roots of this deployment`);
      return real;
    } catch (err) {
      if (err instanceof TenancyError) throw err;
      const parent = resolve(probe, '..');
      if (parent === probe) throw new TenancyError(`${field}: ${path} cannot be resolved`);
      rest.unshift(basename(probe));
      probe = parent;
    }
  }
}

/** Refuses a secret reference not granted to the company, without saying whether it exists. */
export function checkSecretGrant(tenancy: Tenancy, companyId: string, ref: string, field: string): void {
  if (!tenancy.secretGrants) return;
  const granted = [...(tenancy.secretGrants[companyId] ?? []), ...(tenancy.secretGrants['*'] ?? [])];
  if (!granted.includes(ref)) {
    throw new TenancyError(`${field}: ${ref} is not granted to company ${companyId} (ENVRUN_SECRET_GRANTS)`);
  }
}

/** Refuses a driver or provider this deployment does not enable. */
export function checkEnabled(tenancy: Tenancy, driver: Driver, provider: string | null): void {
  if (!tenancy.drivers.has(driver)) throw new TenancyError(`driver: ${driver} is not enabled here (ENVRUN_DRIVERS)`);
  if (driver === 'sandbox' && provider && tenancy.providers && !tenancy.providers.has(provider)) {
    throw new TenancyError(`config.provider: ${provider} is not enabled here (ENVRUN_PROVIDERS)`);
  }
}
