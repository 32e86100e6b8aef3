// The one schema of every environment variable (config/settings.ts): defaults, bad values refused naming
// the variable (never showing a secret), masking for `envrun doctor`, the docs' table, and a guard that
// every variable the source reads is in the schema.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadClientConfig } from '../../client/config.js';
import {
  ConfigError,
  SETTINGS,
  SETTING_NAMES,
  loadSettings,
  readSetting,
  type SettingName,
} from '../../config/settings.js';
import { effectiveSettings, maskUrl, unknownSettings } from '../../config/settings-report.js';
import { loadConfig } from '../../worker/config.js';
import { OPERATIONS_MD, withCurrentTable } from '../../scripts/settings-table.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function refused(env: NodeJS.ProcessEnv): string {
  try {
    loadSettings(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('invalid_configuration');
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(env)}`);
}

describe('defaults', () => {
  it('an empty environment is a valid one, with the documented defaults', () => {
    const s = loadSettings({});
    expect(s).toMatchObject({
      ENVRUN_TASK_QUEUE: 'envrun',
      ENVRUN_HOST_STALE_MS: 90_000,
      ENVRUN_SHUTDOWN_GRACE_MS: 10_000,
      ENVRUN_PROVISION_TIMEOUT_MS: 600_000,
      ENVRUN_MAX_CONCURRENT_ACTIVITIES: 200,
      ENVRUN_MAX_CACHED_WORKFLOWS: 50,
      ENVRUN_REAPER_EVERY: '5m',
      ENVRUN_LOG_LEVEL: 'INFO',
      ENVRUN_PROVIDER_MODULES: [],
      ENVRUN_SANDBOX_UID: 65534,
      ENVRUN_SANDBOX_GID: 65534,
      ENVRUN_ALLOW_HOST_NETWORK: false,
      ENVRUN_MAX_WORKSPACE_BYTES: 2 * 1024 ** 3,
      ENVRUN_SYNC_BACK_DENY: [],
    });
    expect(s.ENVRUN_DATA_DIR).toBe(join(process.cwd(), '.envrun'));
    for (const name of ['DATABASE_URL', 'TEMPORAL_ADDRESS', 'ENVRUN_HOST_ID', 'ENVRUN_SECRET_GRANTS'] as const) {
      expect(s[name], name).toBeUndefined();
    }
  });

  it('a blank variable counts as unset', () => {
    const s = loadSettings({ ENVRUN_TASK_QUEUE: '', ENVRUN_SANDBOX_UID: '  ', DATABASE_URL: '' });
    expect(s.ENVRUN_TASK_QUEUE).toBe('envrun');
    expect(s.ENVRUN_SANDBOX_UID).toBe(65534);
    expect(s.DATABASE_URL).toBeUndefined();
  });

  it('values are parsed to what the code uses', () => {
    expect(readSetting('ENVRUN_DRIVERS', { ENVRUN_DRIVERS: ' local , ssh,' })).toEqual(['local', 'ssh']);
    expect(readSetting('ENVRUN_SYNC_BACK_DENY', { ENVRUN_SYNC_BACK_DENY: '.mcp.json, .claude/**' })).toEqual([
      '.mcp.json',
      '.claude/**',
    ]);
    expect(readSetting('ENVRUN_WORKSPACE_ROOTS', { ENVRUN_WORKSPACE_ROOTS: '/srv/a:/srv/{company}' })).toEqual([
      '/srv/a',
      '/srv/{company}',
    ]);
    expect(readSetting('ENVRUN_SECRET_GRANTS', { ENVRUN_SECRET_GRANTS: '{"*":["env:K"]}' })).toEqual({
      '*': ['env:K'],
    });
    expect(readSetting('ENVRUN_ALLOW_HOST_NETWORK', { ENVRUN_ALLOW_HOST_NETWORK: '1' })).toBe(true);
    expect(readSetting('ENVRUN_ALLOW_HOST_NETWORK', { ENVRUN_ALLOW_HOST_NETWORK: 'false' })).toBe(false);
    expect(readSetting('ENVRUN_MAX_WORKSPACE_BYTES', { ENVRUN_MAX_WORKSPACE_BYTES: '1000' })).toBe(1000);
  });
});

describe('a bad value is refused naming the variable', () => {
  it.each([
    ['ENVRUN_SHUTDOWN_GRACE_MS', 'soon', 'must be a positive integer (ms)'],
    ['ENVRUN_HOST_STALE_MS', '-5', 'must be a positive integer (ms)'],
    ['ENVRUN_MAX_WORKSPACE_BYTES', '2GB', 'must be a positive integer (bytes)'],
    ['ENVRUN_MAX_WORKSPACE_FILES', '0', 'must be a positive integer'],
    ['ENVRUN_SANDBOX_UID', '0', 'must be a uid/gid from 1 to 4294967294 (never 0)'],
    ['ENVRUN_SANDBOX_GID', '4294967295', 'must be a uid/gid from 1 to 4294967294 (never 0)'],
    ['ENVRUN_ALLOW_HOST_NETWORK', 'yes', 'must be 1, true, 0 or false'],
    ['TEMPORAL_TLS', 'on', 'must be 1, true, 0 or false'],
    ['TEMPORAL_ADDRESS', 'localhost', 'must be host:port'],
    ['ENVRUN_LOG_LEVEL', 'info', 'must be TRACE, DEBUG, INFO, WARN or ERROR'],
    ['ENVRUN_REAPER_EVERY', '5', 'must be a duration like 5m, or off'],
    ['ENVRUN_DRIVERS', 'local,docker', 'unknown driver (one of local, ssh, sandbox, plugin)'],
    ['ENVRUN_WORKSPACE_ROOTS', '/srv:relative', 'relative is not an absolute path'],
    ['ENVRUN_WORKSPACE_ROOTS', '/srv/ws-{company}', 'in /srv/ws-{company}, {company} must be a whole path segment'],
    ['ENVRUN_EMBEDDED_PG_PORT', '70000', 'must be a port from 0 to 65535'],
    ['ENVRUN_MAX_WORKSPACE_DEPTH', '1001', 'must be an integer from 1 to 1000'],
    [
      'ENVRUN_SYNC_BACK_DENY',
      '.mcp.json,../up',
      '"../up" is not a pattern relative to the workspace (no leading "/" or "!", no "..")',
    ],
    ['ENVRUN_HOST_ID', '../x', 'must be letters, digits, dot, dash or underscore'],
  ])('%s=%s', (name, value, message) => {
    expect(refused({ [name]: value })).toBe(
      `invalid configuration: ${name}: ${message} (got ${JSON.stringify(value)})`,
    );
    expect(() => readSetting(name as SettingName, { [name]: value })).toThrow(`${name}: ${message}`);
  });

  it('every bad variable is named at once', () => {
    const message = refused({ ENVRUN_SANDBOX_UID: 'x', ENVRUN_LOG_LEVEL: 'loud', ENVRUN_TASK_QUEUE: 'ok' });
    expect(message).toContain('ENVRUN_SANDBOX_UID: ');
    expect(message).toContain('ENVRUN_LOG_LEVEL: ');
    expect(message).not.toContain('ENVRUN_TASK_QUEUE');
  });

  it('a secret is named, never shown', () => {
    const url = refused({ DATABASE_URL: 'mysql://admin:hunter2@db/x' });
    expect(url).toBe('invalid configuration: DATABASE_URL: must be a postgres:// or postgresql:// URL');
    const grants = refused({ ENVRUN_SECRET_GRANTS: '{"acme": ["aws-key-AKIA123"]}' });
    expect(grants).toBe(
      'invalid configuration: ENVRUN_SECRET_GRANTS: must map company ids (or "*") to lists of env:NAME / file:/path',
    );
    expect(refused({ ENVRUN_SECRET_GRANTS: '{acme' })).toBe('invalid configuration: ENVRUN_SECRET_GRANTS: not JSON');
  });

  it('the worker refuses any bad variable at start; a client only its own', () => {
    expect(() => loadConfig({ ENVRUN_SANDBOX_UID: '0' })).toThrow('ENVRUN_SANDBOX_UID: ');
    expect(loadClientConfig({ ENVRUN_SANDBOX_UID: '0' }).taskQueue).toBe('envrun');
    expect(() => loadClientConfig({ TEMPORAL_TLS: 'on' })).toThrow(ConfigError);
  });
});

describe('masking', () => {
  const env = {
    DATABASE_URL: 'postgres://envrun:hunter2@db.internal:5432/envrun?sslpassword=alsosecret',
    TEMPORAL_API_KEY: 'tok-abcdef',
    TEMPORAL_TLS_CLIENT_KEY_DATA: '-----BEGIN PRIVATE KEY-----MIIE',
    TEMPORAL_GRPC_META_AUTHORIZATION: 'Bearer sekrit',
    ENVRUN_SECRET_GRANTS: '{"acme":["env:ACME_DEPLOY_KEY"]}',
    ENVRUN_TASK_QUEUE: 'prod',
  };

  it('secrets and secret references are masked; the rest is shown as the process uses it', () => {
    const rows = effectiveSettings(env);
    const shown = JSON.stringify(rows);
    for (const secret of ['hunter2', 'alsosecret', 'tok-abcdef', 'PRIVATE KEY', 'sekrit', 'ACME_DEPLOY_KEY']) {
      expect(shown).not.toContain(secret);
    }
    const row = (name: string) => rows.find((r) => r.name === name);
    expect(row('DATABASE_URL')).toMatchObject({
      value: 'postgres://envrun:***@db.internal:5432/envrun?sslpassword=***',
      source: 'environment',
    });
    expect(row('TEMPORAL_API_KEY')?.value).toBe('*** (set)');
    expect(row('TEMPORAL_TLS_CLIENT_KEY_DATA')?.value).toBe('*** (set)');
    expect(row('ENVRUN_SECRET_GRANTS')?.value).toBe('*** (set)');
    expect(row('TEMPORAL_GRPC_META_AUTHORIZATION')?.value).toBe('*** (set)');
    expect(row('ENVRUN_TASK_QUEUE')).toMatchObject({ value: 'prod', source: 'environment' });
    expect(row('ENVRUN_SHUTDOWN_GRACE_MS')).toMatchObject({ value: '10000', source: 'default' });
    expect(rows.filter((r) => r.name in SETTINGS)).toHaveLength(SETTING_NAMES.length);
  });

  it('a refused value is reported on its row, a secret one still masked', () => {
    const rows = effectiveSettings({ DATABASE_URL: 'mysql://u:hunter2@h/x', ENVRUN_SANDBOX_UID: '0' });
    expect(JSON.stringify(rows)).not.toContain('hunter2');
    expect(rows.find((r) => r.name === 'DATABASE_URL')?.error).toBe(
      'DATABASE_URL: must be a postgres:// or postgresql:// URL',
    );
    expect(rows.find((r) => r.name === 'ENVRUN_SANDBOX_UID')?.error).toContain('never 0');
  });

  it('an unparseable URL is masked whole', () => {
    expect(maskUrl('not a url hunter2')).toBe('***');
  });

  it('ENVRUN_* variables envrun does not read are listed (typos)', () => {
    expect(unknownSettings({ ENVRUN_MAX_WORKSPACE_BYTE: '1', ENVRUN_DATA_DIR: '/x', PATH: '/bin' })).toEqual([
      'ENVRUN_MAX_WORKSPACE_BYTE',
    ]);
  });
});

/** The production sources: every folder but tests, the bench and the scripts. */
const SOURCE_FOLDERS = [
  'activities',
  'client',
  'config',
  'contracts',
  'drivers',
  'leases',
  'lib',
  'store',
  'worker',
  'workflows',
];
/** Passed through to child processes as they are, not settings of envrun. */
const PASSED_THROUGH = new Set(['PATH', 'HOME', 'LANG']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.(ts|mjs|js)$/.test(name) ? [path] : [];
  });
}

describe('the schema is the whole story', () => {
  it('every variable the source names or reads is in the schema', () => {
    const missing: string[] = [];
    for (const file of SOURCE_FOLDERS.flatMap((f) => sourceFiles(join(ROOT, f)))) {
      const text = readFileSync(file, 'utf8');
      const names = new Set<string>();
      for (const m of text.matchAll(/\b(ENVRUN_[A-Z0-9_]*[A-Z0-9]|TEMPORAL_[A-Z0-9_]*[A-Z0-9])\b/g)) names.add(m[1]!);
      // Reads of `env.NAME` / `env['NAME']` (not an assignment: that is an environment made for a child).
      for (const m of text.matchAll(/\benv\.([A-Z][A-Z0-9_]*)\b(?!\s*=(?!=))/g)) names.add(m[1]!);
      for (const m of text.matchAll(/\benv\[\s*['"`]([A-Z][A-Z0-9_]*)['"`]\s*\](?!\s*=(?!=))/g)) names.add(m[1]!);
      for (const name of names) {
        if (name in SETTINGS || PASSED_THROUGH.has(name) || name === 'TEMPORAL_GRPC_META') continue;
        missing.push(`${relative(ROOT, file)}: ${name}`);
      }
    }
    expect(missing, 'add these to config/settings.ts').toEqual([]);
  });

  it('every setting has a meaning, and an unset variable parses (to its default or to nothing)', () => {
    for (const name of SETTING_NAMES) {
      expect(SETTINGS[name].doc.length, name).toBeGreaterThan(5);
      expect(SETTINGS[name].schema.safeParse(undefined).success, name).toBe(true);
    }
  });

  it("docs/operations.md's table is the schema's (`npm run docs:settings` rewrites it)", () => {
    const doc = readFileSync(OPERATIONS_MD, 'utf8');
    expect(withCurrentTable(doc) === doc, 'run `npm run docs:settings`').toBe(true);
    for (const name of SETTING_NAMES) expect(doc).toContain(`| \`${name}\` |`);
  });

  it('config/settings.ts imports only zod, node:path and contracts/ (the runs client loads it)', () => {
    const text = readFileSync(join(ROOT, 'config', 'settings.ts'), 'utf8');
    const imports = [...text.matchAll(/^import[^'"]*['"]([^'"]+)['"]/gm)].map((m) => m[1]!);
    expect(imports.length).toBeGreaterThan(0);
    for (const spec of imports) expect(spec, spec).toMatch(/^(zod|node:path|\.\.\/contracts\/[a-z-]+\.js)$/);
  });
});
