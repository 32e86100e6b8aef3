// Deployment settings that keep companies apart on a shared worker host: where workspaces may be, which
// secret references each company may use, which drivers and providers are enabled. Read from the
// environment by the worker (and by the admin API and CLI, which check the same rules before writing).
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { DRIVERS, EnvRunError, ExternalId, type Driver, type RealizedExecutionWorkspace } from '../contracts/index.js';
import type { EgressConfig } from '../contracts/egress.js';
import { COMPANY_SEGMENT, loadSettings } from './settings.js';

/** A deployment rule refused something (a path outside the roots, a secret not granted, a driver not enabled). */
export class TenancyError extends EnvRunError {
  override name = 'TenancyError';
  readonly code = 'not_permitted';
}

export { COMPANY_SEGMENT };

/** The variables of the deployment rules (config/settings.ts parses and documents them). */
const TENANCY_SETTINGS = [
  'NODE_ENV',
  'ENVRUN_WORKSPACE_ROOTS',
  'ENVRUN_SECRET_GRANTS',
  'ENVRUN_DRIVERS',
  'ENVRUN_PROVIDERS',
] as const;

export interface Tenancy {
  /**
   * Real paths under which a run's cwd, baseCwd and worktree path must resolve. A root with a
   * `{company}` segment is a different folder for each company: its runs are held to their own.
   */
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
 * value throws a ConfigError naming the variable.
 */
export function loadTenancy(env: NodeJS.ProcessEnv = process.env, dataDir?: string): Tenancy {
  const s = loadSettings(env, TENANCY_SETTINGS);
  const production = s.NODE_ENV === 'production';
  const roots = s.ENVRUN_WORKSPACE_ROOTS ?? [process.cwd(), tmpdir()];
  const grants = s.ENVRUN_SECRET_GRANTS ?? (production ? {} : null);
  const drivers = s.ENVRUN_DRIVERS ?? (production ? PRODUCTION_DRIVERS : [...DRIVERS]);
  const providers = s.ENVRUN_PROVIDERS ?? (production ? PRODUCTION_PROVIDERS : null);
  return {
    workspaceRoots: roots.map(realRoot),
    forbidden: dataDir ? [realOrResolved(dataDir)] : [],
    secretGrants: grants,
    drivers: new Set(drivers),
    providers: providers ? new Set(providers) : null,
  };
}

/** A root's real path; in a per-company root, that of the part before its first `{company}` segment. */
function realRoot(root: string): string {
  const segments = resolve(root).split(sep);
  const at = segments.indexOf(COMPANY_SEGMENT);
  if (at < 0) return realOrResolved(root);
  return join(realOrResolved(segments.slice(0, at).join(sep) || sep), ...segments.slice(at));
}

/**
 * The real roots of one company's workspaces: `{company}` replaced by its id, which must be a safe path
 * segment (an external id: no `/`, no `.` or `..`, never empty).
 */
export function companyRoots(tenancy: Tenancy, companyId: string): string[] {
  if (!ExternalId.safeParse(companyId).success)
    throw new TenancyError(`companyId: ${JSON.stringify(companyId)} cannot name a workspace folder`);
  return tenancy.workspaceRoots.map((root) =>
    root.includes(COMPANY_SEGMENT) ? realOrResolved(root.split(COMPANY_SEGMENT).join(companyId)) : root,
  );
}

function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * The real path of a workspace path (symlinks followed), or a TenancyError naming the field when it is
 * outside every root of the company or inside a forbidden folder. A path that does not exist yet is
 * checked through its nearest existing parent, so a worktree to be made is held to the same rule.
 */
export function checkWorkspacePath(tenancy: Tenancy, companyId: string, path: string, field: string): string {
  const roots = companyRoots(tenancy, companyId);
  let probe = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      const real = resolve(realpathSync(probe), ...rest);
      const allowed = roots.some((root) => inside(real, root));
      const refused = tenancy.forbidden.some((f) => inside(real, f));
      if (!allowed || refused)
        throw new TenancyError(`${field}: ${path} is outside the workspace roots of company ${companyId}`);
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

/**
 * Every path of a run is read or written on the worker's host: each must be inside its company's roots.
 * A TenancyError names the field (`request.workspace.cwd`, …).
 */
export function checkRunPaths(tenancy: Tenancy, companyId: string, workspace: RealizedExecutionWorkspace): void {
  const paths: Array<[string | null, string]> = [
    [workspace.baseCwd, 'baseCwd'],
    [workspace.cwd, 'cwd'],
    [workspace.worktreePath, 'worktreePath'],
  ];
  for (const [path, field] of paths) {
    if (path) checkWorkspacePath(tenancy, companyId, path, `request.workspace.${field}`);
  }
}

/**
 * The real paths of a sandbox environment's read-only mounts (`config.mounts`, `[{source, target}]`), or a
 * TenancyError naming `config.mounts[i].source` when one does not exist or resolves (links followed: the
 * sandbox binds what a link leads to) outside the company's roots or into a forbidden folder.
 */
export function checkMountSources(tenancy: Tenancy, companyId: string, mounts: unknown): string[] {
  if (!Array.isArray(mounts)) throw new TenancyError('config.mounts: must be a list of {source, target}');
  return mounts.map((mount: unknown, i) => {
    const field = `config.mounts[${i}].source`;
    const source = (mount as { source?: unknown } | null)?.source;
    if (typeof source !== 'string' || !isAbsolute(source)) throw new TenancyError(`${field}: must be an absolute path`);
    try {
      realpathSync(source);
    } catch {
      throw new TenancyError(`${field}: ${source} does not exist`);
    }
    return checkWorkspacePath(tenancy, companyId, source, field);
  });
}

/** Refuses a secret reference not granted to the company, without saying whether it exists. */
export function checkSecretGrant(tenancy: Tenancy, companyId: string, ref: string, field: string): void {
  if (!tenancy.secretGrants) return;
  const granted = [...(tenancy.secretGrants[companyId] ?? []), ...(tenancy.secretGrants['*'] ?? [])];
  if (!granted.includes(ref)) {
    throw new TenancyError(`${field}: ${ref} is not granted to company ${companyId} (ENVRUN_SECRET_GRANTS)`);
  }
}

/**
 * Refuses a sandbox config whose egress proxy would inject a secret not granted to the company
 * (`config.egress.inject[i].secret`). The config as stored: a missing or malformed `egress` is the schema's
 * to refuse, not this check's.
 */
export function checkEgressGrants(tenancy: Tenancy, companyId: string, config: Record<string, unknown>): void {
  const inject: unknown = (config.egress as Partial<EgressConfig> | null | undefined)?.inject;
  if (!Array.isArray(inject)) return;
  inject.forEach((entry: unknown, i) => {
    const secret = (entry as { secret?: unknown } | null)?.secret;
    if (typeof secret !== 'string')
      throw new TenancyError(`config.egress.inject[${i}].secret: must be a secret reference`);
    checkSecretGrant(tenancy, companyId, secret, `config.egress.inject[${i}].secret`);
  });
}

/** Refuses a driver or provider this deployment does not enable. */
export function checkEnabled(tenancy: Tenancy, driver: Driver, provider: string | null): void {
  if (!tenancy.drivers.has(driver)) throw new TenancyError(`driver: ${driver} is not enabled here (ENVRUN_DRIVERS)`);
  if (driver === 'sandbox' && provider && tenancy.providers && !tenancy.providers.has(provider)) {
    throw new TenancyError(`config.provider: ${provider} is not enabled here (ENVRUN_PROVIDERS)`);
  }
}
