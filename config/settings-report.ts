// The settings as a person reads them: each variable's effective value with secrets masked (for `envrun
// doctor`), the variables set that envrun does not read, and the Markdown table of docs/operations.md.
import {
  SETTING_NAMES,
  SETTINGS,
  parseSetting,
  present,
  spec,
  type SettingName,
  type SettingSection,
} from './settings.js';

/** A URL with its password (and any token in its query) replaced by ***. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|token|key/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    return '***';
  }
}

/** Variables outside the table that are secret by their name: Temporal's gRPC metadata headers. */
const SECRET_PREFIXES = ['TEMPORAL_GRPC_META_'];

export interface EffectiveSetting {
  name: string;
  section: SettingSection;
  /** What the process uses, for a person: masked where the variable is secret. */
  value: string;
  source: 'environment' | 'default';
  /** Why the variable's value is refused. */
  error?: string;
}

/** Docs text for a terminal: without Markdown's backticks. */
const plain = (text: string) => text.replace(/`/g, '');

function shown(value: unknown): string {
  if (value === undefined) return '(unset)';
  if (Array.isArray(value)) return value.length === 0 ? '(none)' : value.join(',');
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * Every variable as this process would use it, secrets masked: the value it was given or its default, and
 * for a bad value why it is refused. Temporal's gRPC metadata headers, when set, are listed masked too.
 */
export function effectiveSettings(env: NodeJS.ProcessEnv = process.env): EffectiveSetting[] {
  const rows: EffectiveSetting[] = SETTING_NAMES.map((name) => {
    const s = spec(name);
    const raw = present(env, name);
    const source = raw === undefined ? 'default' : 'environment';
    const r = parseSetting(name, env);
    let value: string;
    if (raw === undefined) value = r.ok && r.value !== undefined ? shown(r.value) : plain(s.defaultText ?? '(unset)');
    else if (s.show === 'secret') value = '*** (set)';
    else if (s.show === 'presence') value = '(set)';
    else if (s.show === 'url') value = maskUrl(raw);
    else value = r.ok ? shown(r.value) : raw;
    return { name, section: s.section, value, source, ...(r.ok ? {} : { error: r.message }) };
  });
  const headers = Object.keys(env)
    .sort()
    .filter((name) => SECRET_PREFIXES.some((p) => name.startsWith(p)) && present(env, name) !== undefined)
    .map((name): EffectiveSetting => ({ name, section: 'Temporal', value: '*** (set)', source: 'environment' }));
  const afterTemporal = rows.filter((r) => r.section === 'Temporal').length; // the table's first section
  rows.splice(afterTemporal, 0, ...headers);
  return rows;
}

/** ENVRUN_* variables set in `env` that envrun does not read (a typo, most often). */
export function unknownSettings(env: NodeJS.ProcessEnv = process.env): string[] {
  return Object.keys(env)
    .filter((name) => name.startsWith('ENVRUN_') && !(name in SETTINGS))
    .sort();
}

/** The default of a variable as the docs show it. */
export function defaultText(name: SettingName): string {
  const s = spec(name);
  if (s.defaultText) return s.defaultText;
  const parsed = s.schema.safeParse(undefined);
  return parsed.success && parsed.data !== undefined ? `\`${shown(parsed.data)}\`` : '(unset)';
}

/** The Markdown table of every variable, by section (docs/operations.md holds it). */
export function settingsTable(): string {
  const rows = ['| Variable | Default | Meaning |', '| --- | --- | --- |'];
  let section: SettingSection | null = null;
  for (const name of SETTING_NAMES) {
    const s = spec(name);
    if (s.section !== section) {
      section = s.section;
      rows.push(`| **${section}** | | |`);
    }
    const masked =
      s.show === 'secret' ? ' (secret: never shown)' : s.show === 'url' ? ' (shown without its password)' : '';
    rows.push(`| \`${name}\` | ${defaultText(name)} | ${s.doc.replace(/\|/g, '\\|')}${masked} |`);
  }
  return rows.join('\n');
}
