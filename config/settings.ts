// Every environment variable envrun's processes read, in one zod schema: what it means, its default, how a
// bad value is refused (naming the variable), and whether `envrun doctor` may show it. worker/config.ts and
// client/config.ts parse their part of it; code deeper down reads one variable with `readSetting`. The
// table in docs/operations.md is generated from here (test/unit/settings.test.ts checks it is current, and
// that every ENVRUN_* name the source mentions is here; settings-report.ts shows them). This module imports
// zod, contracts/ and node:path only: the runs client loads it. It is long because the table is: one entry
// a variable, read top to bottom.
import { resolve } from 'node:path';
import { z } from 'zod';
import { DEFAULT_TASK_QUEUE, DRIVERS } from '../contracts/constants.js';
import { ProviderKey } from '../contracts/driver-config.js';
import { durationMs } from '../contracts/duration.js';
import { EnvRunError } from '../contracts/errors.js';

/** A bad configuration value; the message names the variable (and never shows a secret's value). */
export class ConfigError extends EnvRunError {
  override name = 'ConfigError';
  readonly code = 'invalid_configuration';
}

export const hostPort = z.string().regex(/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/, 'must be host:port');

const integer = (min: number, max: number, message: string) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, message)
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n) && n >= min && n <= max, message);
const positiveInt = (what = 'a positive integer') => integer(1, Number.MAX_SAFE_INTEGER, `must be ${what}`);
const flag = z
  .enum(['1', 'true', '0', 'false'], { error: 'must be 1, true, 0 or false' })
  .transform((v) => v === '1' || v === 'true');
/** A comma-separated list; blanks around the commas are dropped. */
const commaList = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (v) =>
      typeof v === 'string'
        ? v
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : v,
    z.array(item),
  );
const path = z.string().min(1);
/** A JSON value parsed and checked with `schema`; `message` says what it must be. */
const jsonSetting = <T extends z.ZodType>(schema: T, message: string) =>
  z.string().transform((v, ctx): z.infer<T> => {
    let json: unknown;
    try {
      json = JSON.parse(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'not JSON' });
      return z.NEVER;
    }
    const parsed = schema.safeParse(json);
    if (parsed.success) return parsed.data;
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  });
/** A host uid or gid for the sandboxes: not root, not the kernel's "no id" (2^32 - 1). */
const hostId = integer(1, 2 ** 32 - 2, 'must be a uid/gid from 1 to 4294967294 (never 0)');
const SecretGrants = z.record(z.string().min(1), z.array(z.string().regex(/^(env:|file:\/)/)));
const ipAddress = z.union([z.ipv4(), z.ipv6()]);
const EgressTestResolve = z
  .object({
    hosts: z.record(z.string().min(1), z.array(ipAddress).min(1)).default({}),
    public: z.array(ipAddress).default([]),
  })
  .strict();

/** In a workspace root, the path segment that stands for the run's company id (`/srv/envrun/{company}`). */
export const COMPANY_SEGMENT = '{company}';
export const DEFAULT_HOST_STALE_MS = 90_000;
export const DEFAULT_MAX_CACHED_WORKFLOWS = 50;
export const DEFAULT_MAX_WORKSPACE_BYTES = 2 * 1024 ** 3;
export const DEFAULT_MAX_WORKSPACE_FILES = 1_000_000;
export const DEFAULT_MAX_WORKSPACE_DEPTH = 128;
export const DEFAULT_SANDBOX_HOST_ID = 65534;
export const DEFAULT_EGRESS_HOST_ID = 65533;
export const DEFAULT_MAX_COMMAND_OUTPUT_BYTES = 1024 ** 3;
export const DEFAULT_MAX_COMPANY_COMMAND_OUTPUT_BYTES = 16 * 1024 ** 3;

export type SettingSection = 'Temporal' | 'Store' | 'Worker' | 'Deployment rules' | 'Sandboxes and sync';

export interface SettingSpec {
  section: SettingSection;
  /** Parses the variable's text; absent (or blank) variables parse `undefined`, so defaults live here. */
  schema: z.ZodType;
  /** What it is, for the docs and `envrun doctor`. */
  doc: string;
  /** The default as a person reads it; when absent, what the schema makes of an unset variable. */
  defaultText?: string;
  /**
   * How `envrun doctor` and errors show a value given: `url` without its password, `secret` only as set,
   * `presence` only as set (long, not secret: a PEM). Without it, as it is.
   */
  show?: 'url' | 'secret' | 'presence';
}

/** The variables, grouped as the docs show them. Temporal's connection variables are read by @temporalio/envconfig; they are checked here first. */
export const SETTINGS = {
  TEMPORAL_ADDRESS: {
    section: 'Temporal',
    schema: hostPort.optional(),
    defaultText: 'localhost:7233',
    doc: 'host:port of the Temporal frontend',
  },
  TEMPORAL_NAMESPACE: {
    section: 'Temporal',
    schema: z.string().min(1).max(255).optional(),
    defaultText: 'default',
    doc: 'the Temporal namespace',
  },
  TEMPORAL_API_KEY: {
    section: 'Temporal',
    schema: z.string().optional(),
    show: 'secret',
    doc: 'API key (Temporal Cloud); turns TLS on unless TEMPORAL_TLS says otherwise',
  },
  TEMPORAL_TLS: { section: 'Temporal', schema: flag.optional(), doc: 'connect with TLS' },
  TEMPORAL_TLS_CLIENT_CERT_PATH: { section: 'Temporal', schema: path.optional(), doc: "the client certificate's file" },
  TEMPORAL_TLS_CLIENT_CERT_DATA: {
    section: 'Temporal',
    schema: z.string().optional(),
    show: 'presence',
    doc: 'the client certificate (PEM)',
  },
  TEMPORAL_TLS_CLIENT_KEY_PATH: { section: 'Temporal', schema: path.optional(), doc: "the client key's file" },
  TEMPORAL_TLS_CLIENT_KEY_DATA: {
    section: 'Temporal',
    schema: z.string().optional(),
    show: 'secret',
    doc: 'the client key (PEM)',
  },
  TEMPORAL_TLS_SERVER_CA_CERT_PATH: { section: 'Temporal', schema: path.optional(), doc: "the server CA's file" },
  TEMPORAL_TLS_SERVER_CA_CERT_DATA: {
    section: 'Temporal',
    schema: z.string().optional(),
    show: 'presence',
    doc: 'the server CA (PEM)',
  },
  TEMPORAL_TLS_SERVER_NAME: {
    section: 'Temporal',
    schema: z.string().optional(),
    doc: 'the name the server certificate must carry',
  },
  TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: {
    section: 'Temporal',
    schema: flag.optional(),
    doc: "skip checking the server certificate's name (tests only)",
  },
  TEMPORAL_CONFIG_FILE: { section: 'Temporal', schema: path.optional(), doc: "Temporal's TOML profile file" },
  TEMPORAL_PROFILE: { section: 'Temporal', schema: z.string().optional(), doc: 'the profile to use from that file' },
  ENVRUN_TASK_QUEUE: {
    section: 'Temporal',
    schema: z.string().min(1).max(200).default(DEFAULT_TASK_QUEUE),
    doc: 'the shared task queue; each worker also polls `<queue>/host/<ENVRUN_HOST_ID>`',
  },

  DATABASE_URL: {
    section: 'Store',
    schema: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
      .optional(),
    show: 'url',
    defaultText: '(embedded)',
    doc: 'any PostgreSQL; without it, the embedded server of ENVRUN_DATA_DIR',
  },
  ENVRUN_DATA_DIR: {
    section: 'Store',
    schema: path.default('./.envrun').transform((p) => resolve(p)),
    defaultText: '`./.envrun`',
    doc: 'the data folder: the embedded store, sandboxes, fake leases (relative to the working folder)',
  },
  ENVRUN_EMBEDDED_PG_PORT: {
    section: 'Store',
    schema: integer(0, 65535, 'must be a port from 0 to 65535').optional(),
    defaultText: '(a free port)',
    doc: 'the port the embedded store listens on (127.0.0.1), when a process starts it',
  },

  ENVRUN_HOST_ID: {
    section: 'Worker',
    schema: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'must be letters, digits, dot, dash or underscore')
      .optional(),
    defaultText: 'the hostname',
    doc: 'this worker host: it also polls its own queue, where the steps on resources it holds run',
  },
  ENVRUN_HOST_STALE_MS: {
    section: 'Worker',
    schema: positiveInt('a positive integer (ms)').default(DEFAULT_HOST_STALE_MS),
    doc: "a host whose queue sees no poll for this long is gone: its runs are placed again or end `environment_host_lost` (must exceed the server's long-poll interval)",
  },
  ENVRUN_SHUTDOWN_GRACE_MS: {
    section: 'Worker',
    schema: positiveInt('a positive integer (ms)').default(10_000),
    doc: 'SIGINT/SIGTERM drain time',
  },
  ENVRUN_WORKFLOW_BUNDLE: {
    section: 'Worker',
    schema: path.optional(),
    defaultText: '(bundle at start)',
    doc: 'a prebuilt workflow bundle from `npm run bundle` (production)',
  },
  ENVRUN_PROVISION_TIMEOUT_MS: {
    section: 'Worker',
    schema: positiveInt('a positive integer (ms)').default(10 * 60_000),
    doc: 'default provision timeout',
  },
  ENVRUN_MAX_CONCURRENT_ACTIVITIES: {
    section: 'Worker',
    schema: positiveInt().default(200),
    doc: 'activity slots of the worker (size them so a host never stays full for longer than ENVRUN_HOST_STALE_MS)',
  },
  ENVRUN_MAX_CACHED_WORKFLOWS: {
    section: 'Worker',
    schema: integer(0, Number.MAX_SAFE_INTEGER, 'must be an integer, 0 or more').default(DEFAULT_MAX_CACHED_WORKFLOWS),
    doc: 'runs kept in worker memory; idle held runs beyond it are evicted and replayed when they next have work',
  },
  ENVRUN_METRICS_ADDRESS: {
    section: 'Worker',
    schema: hostPort.optional(),
    defaultText: '(none)',
    doc: '`host:port` of the Prometheus endpoint (`/metrics`)',
  },
  ENVRUN_MAX_COMMAND_OUTPUT_BYTES: {
    section: 'Worker',
    schema: positiveInt('a positive integer (bytes)').default(DEFAULT_MAX_COMMAND_OUTPUT_BYTES),
    doc: "the most output one command's journal keeps (both streams); past it a truncation marker, the rest dropped",
  },
  ENVRUN_MAX_COMPANY_COMMAND_OUTPUT_BYTES: {
    section: 'Worker',
    schema: positiveInt('a positive integer (bytes)').default(DEFAULT_MAX_COMPANY_COMMAND_OUTPUT_BYTES),
    doc: "the most command output a company's journals keep in all (a new command gets what is left)",
  },
  ENVRUN_COMMAND_RETENTION: {
    section: 'Worker',
    schema: z
      .string()
      .refine((v) => durationMs(v) !== null, 'must be a duration like 7d')
      .default('7d'),
    doc: "how long a command's journal is kept after its lease is released (the reaper deletes older ones)",
  },
  ENVRUN_REAPER_EVERY: {
    section: 'Worker',
    schema: z
      .string()
      .refine((v) => v === 'off' || durationMs(v) !== null, 'must be a duration like 5m, or off')
      .default('5m'),
    doc: 'interval of the reaper schedule the worker installs (`off`: none)',
  },
  ENVRUN_LOG_LEVEL: {
    section: 'Worker',
    schema: z
      .enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'], { error: 'must be TRACE, DEBUG, INFO, WARN or ERROR' })
      .default('INFO'),
    doc: "the worker's JSON log lines: every step's start, end or failure with the run's ids, and Temporal's own logs",
  },
  ENVRUN_PROVIDER_MODULES: {
    section: 'Worker',
    schema: commaList(path).default([]),
    defaultText: '(none)',
    doc: 'comma-separated paths of sandbox provider modules (worker and admin)',
  },
  ENVRUN_PLUGIN_MODULES: {
    section: 'Worker',
    schema: commaList(path).default([]),
    defaultText: '(none)',
    doc: 'comma-separated paths of plugin modules, the `plugin` driver (worker and admin)',
  },
  ENVRUN_PAPERCLIP_PLUGINS: {
    section: 'Worker',
    schema: commaList(path).default([]),
    defaultText: '(none)',
    doc: 'comma-separated folders of Paperclip plugin packages (`paperclipPlugin.{manifest,worker}` in package.json); each `sandbox_provider` environment driver becomes a sandbox provider under its driver key (worker and admin)',
  },

  NODE_ENV: {
    section: 'Deployment rules',
    schema: z.string().optional(),
    doc: '`production` switches the defaults below to the strict ones',
  },
  ENVRUN_WORKSPACE_ROOTS: {
    section: 'Deployment rules',
    schema: z
      .string()
      .transform((v, ctx) => {
        const roots = v.split(':').filter(Boolean);
        for (const root of roots) {
          if (!root.startsWith('/')) ctx.addIssue({ code: 'custom', message: `${root} is not an absolute path` });
          else if (root.split('/').some((seg) => seg !== COMPANY_SEGMENT && seg.includes(COMPANY_SEGMENT)))
            ctx.addIssue({ code: 'custom', message: `in ${root}, ${COMPANY_SEGMENT} must be a whole path segment` });
        }
        return roots;
      })
      .optional(),
    defaultText: 'working folder and OS temp folder',
    doc: "colon-separated roots every run path must resolve inside (never the data folder); a `{company}` path segment stands for the run's company id",
  },
  ENVRUN_SECRET_GRANTS: {
    section: 'Deployment rules',
    schema: jsonSetting(SecretGrants, 'must map company ids (or "*") to lists of env:NAME / file:/path').optional(),
    show: 'secret',
    defaultText: 'production: none; else any',
    doc: 'JSON `{"<company>" | "*": ["env:NAME" | "file:/path"]}`: the secret references each company may use',
  },
  ENVRUN_DRIVERS: {
    section: 'Deployment rules',
    schema: commaList(z.enum(DRIVERS, { error: `unknown driver (one of ${DRIVERS.join(', ')})` })).optional(),
    defaultText: 'production: `ssh,sandbox,plugin`; else all',
    doc: 'the drivers this deployment enables',
  },
  ENVRUN_PROVIDERS: {
    section: 'Deployment rules',
    schema: commaList(ProviderKey).optional(),
    defaultText: 'production: `bubblewrap`; else all loaded',
    doc: 'the sandbox providers this deployment enables',
  },

  ENVRUN_SANDBOX_UID: {
    section: 'Sandboxes and sync',
    schema: hostId.default(DEFAULT_SANDBOX_HOST_ID),
    doc: 'the host uid a root worker runs bubblewrap sandboxes as',
  },
  ENVRUN_SANDBOX_GID: {
    section: 'Sandboxes and sync',
    schema: hostId.default(DEFAULT_SANDBOX_HOST_ID),
    doc: 'the host gid a root worker runs bubblewrap sandboxes as',
  },
  ENVRUN_EGRESS_UID: {
    section: 'Sandboxes and sync',
    schema: hostId.default(DEFAULT_EGRESS_HOST_ID),
    doc: 'the host uid and gid a root worker runs its egress proxy (`network: "allowlist"`) as; not the sandboxes\' uid',
  },
  ENVRUN_ALLOW_HOST_NETWORK: {
    section: 'Sandboxes and sync',
    schema: flag.default(false),
    doc: '`1` lets a bubblewrap environment use `network: "host"`',
  },
  ENVRUN_EGRESS_TEST_RESOLVE: {
    section: 'Sandboxes and sync',
    schema: jsonSetting(
      EgressTestResolve,
      'must be {"hosts": {"<name>": ["<ip>", ...]}, "public": ["<ip>", ...]}',
    ).optional(),
    defaultText: '(none; refused under NODE_ENV=production)',
    doc: 'tests only: JSON `{"hosts": {"<name>": ["<ip>"]}, "public": ["<ip>"]}`; the egress proxy answers these names from `hosts` and counts the `public` addresses as public',
  },
  ENVRUN_MAX_WORKSPACE_BYTES: {
    section: 'Sandboxes and sync',
    schema: positiveInt('a positive integer (bytes)').default(DEFAULT_MAX_WORKSPACE_BYTES),
    doc: 'the most a sync-back may bring back',
  },
  ENVRUN_MAX_WORKSPACE_FILES: {
    section: 'Sandboxes and sync',
    schema: positiveInt().default(DEFAULT_MAX_WORKSPACE_FILES),
    doc: 'the most entries a sync-back may bring back',
  },
  ENVRUN_MAX_WORKSPACE_DEPTH: {
    section: 'Sandboxes and sync',
    schema: integer(1, 1000, 'must be an integer from 1 to 1000').default(DEFAULT_MAX_WORKSPACE_DEPTH),
    doc: 'the deepest folder nesting a sync-back may bring back (at most 1000)',
  },
  ENVRUN_SYNC_BACK_DENY: {
    section: 'Sandboxes and sync',
    schema: commaList(
      z.string().superRefine((p, ctx) => {
        if (p.startsWith('/') || p.startsWith('!') || p.split('/').includes('..'))
          ctx.addIssue({
            code: 'custom',
            message: `${JSON.stringify(p)} is not a pattern relative to the workspace (no leading "/" or "!", no "..")`,
          });
      }),
    ).default([]),
    defaultText: '(none)',
    doc: 'comma-separated globs (relative to the workspace) a sync-back never brings back; each is reported',
  },
} satisfies Record<string, SettingSpec>;

export type SettingName = keyof typeof SETTINGS;
type Specs = typeof SETTINGS;
export type Settings = { [K in SettingName]: z.output<Specs[K]['schema']> };

export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

export const spec = (name: SettingName): SettingSpec => SETTINGS[name];

/** The variable's text as the schema reads it: a blank variable counts as unset. */
export function present(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? undefined : raw;
}

/** "NAME: message" and, unless the variable is masked, the value that was refused. */
function describe(name: SettingName, raw: string | undefined, error: z.ZodError): string {
  const messages = [...new Set(error.issues.map((i) => i.message))].join('; ');
  const got = raw !== undefined && !spec(name).show ? ` (got ${JSON.stringify(raw)})` : '';
  return `${name}: ${messages}${got}`;
}

/** One variable, parsed: its value, or the message naming it. */
export function parseSetting<N extends SettingName>(
  name: N,
  env: NodeJS.ProcessEnv,
): { ok: true; value: Settings[N] } | { ok: false; message: string } {
  const raw = present(env, name);
  const parsed = spec(name).schema.safeParse(raw);
  return parsed.success
    ? { ok: true, value: parsed.data as Settings[N] }
    : { ok: false, message: describe(name, raw, parsed.error) };
}

/** One variable, parsed; a bad value throws a ConfigError naming it. */
export function readSetting<N extends SettingName>(name: N, env: NodeJS.ProcessEnv = process.env): Settings[N] {
  const r = parseSetting(name, env);
  if (!r.ok) throw new ConfigError(`invalid configuration: ${r.message}`);
  return r.value;
}

/** The named variables (by default all), parsed; every bad one is named in the ConfigError. */
export function loadSettings<N extends SettingName = SettingName>(
  env: NodeJS.ProcessEnv = process.env,
  names: readonly N[] = SETTING_NAMES as N[],
): Pick<Settings, N> {
  const out: Partial<Settings> = {};
  const bad: string[] = [];
  for (const name of names) {
    const r = parseSetting(name, env);
    if (r.ok) (out as Record<string, unknown>)[name] = r.value;
    else bad.push(r.message);
  }
  if (bad.length > 0) throw new ConfigError(`invalid configuration: ${bad.join('; ')}`);
  return out as Pick<Settings, N>;
}
