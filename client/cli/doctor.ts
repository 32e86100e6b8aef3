// `envrun doctor`: the settings this host's envrun runs with (every variable of config/settings.ts, secrets
// masked) and what each probe found here: the sandbox's tools and kernel features, Temporal, the store. A
// required probe that fails makes the exit code 1. Declared in commands.ts.
import { Connection } from '@temporalio/client';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { durationMs, durationString } from '../../contracts/duration.js';
import { DEFAULT_SANDBOX_HOST_ID, loadSettings, type Settings } from '../../config/settings.js';
import { effectiveSettings, maskUrl, unknownSettings } from '../../config/settings-report.js';
import { loadTenancy } from '../../config/tenancy.js';
import { bwrapUnavailable, findBwrap, findPrlimit, findSlirp4netns } from '../../drivers/providers/bubblewrap/index.js';
import { sandboxSeccompFilter } from '../../drivers/providers/bubblewrap/seccomp.js';
import { readStoreInfo, embeddedUrl } from '../../store/embedded.js';
import { clientConfigFrom, type ClientConfig } from '../config.js';
import { check } from './input.js';
import { EXIT_FAILURE, print, type Output } from './output.js';

/** ok; warn: a probe that found a problem where nothing requires it; fail: a required probe failed. */
export type ProbeStatus = 'ok' | 'warn' | 'fail';
export interface ProbeResult {
  name: string;
  status: ProbeStatus;
  detail: string;
}

const probe = (name: string, ok: boolean, required: boolean, detail: string): ProbeResult => ({
  name,
  status: ok ? 'ok' : required ? 'fail' : 'warn',
  detail,
});
const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
const readOrNull = (path: string) => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
};

/** The first line a tool prints for --version, or why it printed none. */
function versionOf(path: string): string {
  const res = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 5_000 });
  return (
    (res.stdout || res.stderr || '').split('\n')[0]?.trim() ||
    `no version (${res.error?.message ?? `exit ${res.status}`})`
  );
}

/** Is the bubblewrap provider enabled here (the sandbox driver and the provider, by the deployment rules)? */
function bubblewrapEnabled(): boolean {
  try {
    const tenancy = loadTenancy(process.env);
    return tenancy.drivers.has('sandbox') && (!tenancy.providers || tenancy.providers.has('bubblewrap'));
  } catch {
    return true; // the settings probe reports the bad value
  }
}

/** What a sandbox needs on this host. `required`: the bubblewrap provider is enabled, so its runs need these. */
export function sandboxProbes(
  settings: Pick<Settings, 'ENVRUN_SANDBOX_UID' | 'ENVRUN_SANDBOX_GID'>,
  required: boolean,
) {
  const results: ProbeResult[] = [];
  const bwrap = findBwrap();
  results.push(
    probe(
      'bwrap',
      bwrap !== null,
      required,
      bwrap ? `${bwrap}: ${versionOf(bwrap)}` : 'not installed (Debian: apt-get install bubblewrap)',
    ),
  );
  // As the provider runs it: a root worker runs bwrap as the sandbox uid, so this is the unprivileged case.
  const runAs =
    process.getuid?.() === 0 ? { uid: settings.ENVRUN_SANDBOX_UID, gid: settings.ENVRUN_SANDBOX_GID } : null;
  const who = runAs ? `as uid ${runAs.uid}` : `as uid ${process.getuid?.() ?? '?'}`;
  if (bwrap) {
    const reason = bwrapUnavailable(bwrap, runAs);
    const max = readOrNull('/proc/sys/user/max_user_namespaces');
    const hint = max === '0' ? ' (user.max_user_namespaces is 0)' : '';
    results.push(
      probe(
        'user namespaces',
        reason === null,
        required,
        reason ? `${reason}${hint}` : `bwrap ${who} made user, pid, mount, ipc, uts and net namespaces`,
      ),
    );
    const filter = sandboxSeccompFilter();
    if (!filter) {
      results.push(probe('seccomp', false, false, `no seccomp filter for ${process.arch}: sandboxes run without one`));
    } else {
      // bwrap reads the filter from stdin (fd 0), installs it and runs `true` under it.
      const res = spawnSync(
        bwrap,
        ['--ro-bind', '/', '/', '--unshare-all', '--die-with-parent', '--seccomp', '0', 'true'],
        {
          input: filter,
          encoding: 'utf8',
          timeout: 10_000,
          cwd: '/',
          ...(runAs ?? {}),
        },
      );
      const ok = res.status === 0;
      results.push(
        probe(
          'seccomp',
          ok,
          required,
          ok
            ? `bwrap ${who} ran a command under envrun's filter (${filter.length / 8} instructions, ${process.arch})`
            : `bwrap could not install envrun's filter: ${(res.stderr || res.error?.message || `exit ${res.status}`).trim()}`,
        ),
      );
    }
  } else {
    results.push(probe('user namespaces', false, required, 'not checked: no bwrap'));
    results.push(probe('seccomp', false, required, 'not checked: no bwrap'));
  }
  const slirp = findSlirp4netns();
  results.push(
    probe(
      'slirp4netns',
      slirp !== null,
      false,
      slirp
        ? `${slirp}: ${versionOf(slirp)}`
        : 'not installed: network "outbound" is unavailable (Debian: apt-get install slirp4netns)',
    ),
  );
  const prlimit = findPrlimit();
  results.push(
    probe('prlimit', prlimit !== null, required, prlimit ?? 'not installed (Debian: apt-get install util-linux)'),
  );
  return results;
}

/** Connects to Temporal and asks for the server's version and the namespace, within `timeoutMs`. */
export async function temporalProbe(config: ClientConfig, timeoutMs: number): Promise<ProbeResult> {
  const where = `${config.temporal.address}, namespace ${config.temporal.namespace}`;
  const started = Date.now();
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ ...config.temporal.connection, connectTimeout: timeoutMs });
    const service = connection.workflowService;
    const deadline = started + timeoutMs;
    const info = await connection.withDeadline(deadline, () => service.getSystemInfo({}));
    await connection.withDeadline(deadline, () => service.describeNamespace({ namespace: config.temporal.namespace }));
    const version = info.serverVersion ? `server ${info.serverVersion}, ` : '';
    return probe('temporal', true, true, `${where}: reachable (${version}${Date.now() - started} ms)`);
  } catch (err) {
    return probe('temporal', false, true, `${where}: ${errorText(err)}`);
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/**
 * Connects to the store within `timeoutMs`. The embedded store counts as reachable when it is not running:
 * the first process that needs it starts it.
 */
export async function storeProbe(config: ClientConfig, timeoutMs: number): Promise<ProbeResult> {
  let url = config.databaseUrl;
  let where = url ? maskUrl(url) : `embedded store of ${config.dataDir}`;
  if (!url) {
    const info = readStoreInfo(config.dataDir);
    if (!info) return probe('store', true, false, `${where}: not running (the first process that needs it starts it)`);
    url = embeddedUrl(info, 'envrun');
    where = `${where} (127.0.0.1:${info.port})`;
  }
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => undefined);
  const started = Date.now();
  try {
    await client.connect();
    const version = await client.query<{ server_version: string }>('show server_version');
    const migrated = await client.query<{ t: string | null }>("select to_regclass('environments')::text as t");
    const schema = migrated.rows[0]?.t ? 'schema in place' : 'no schema yet (the worker applies it at start)';
    return probe(
      'store',
      true,
      true,
      `${where}: PostgreSQL ${version.rows[0]?.server_version ?? '?'}, ${schema} (${Date.now() - started} ms)`,
    );
  } catch (err) {
    const embedded = config.databaseUrl === undefined;
    if (embedded && (err as { code?: string }).code === '3D000')
      return probe('store', true, false, `${where}: running, no envrun database yet (made when first needed)`);
    // Embedded: a stale store.json (the daemon is gone); the next process that needs it starts another.
    return probe('store', false, !embedded, `${where}: ${errorText(err)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface DoctorReport {
  ok: boolean;
  settings: ReturnType<typeof effectiveSettings>;
  /** ENVRUN_* variables set here that envrun does not read. */
  unknown: string[];
  probes: ProbeResult[];
}

export async function doctorReport(timeoutMs: number): Promise<DoctorReport> {
  const env = process.env;
  const settings = effectiveSettings(env);
  const probes: ProbeResult[] = [];
  let parsed: Settings | null = null;
  try {
    parsed = loadSettings(env);
    probes.push(probe('settings', true, true, `${settings.length} variables read, none refused`));
  } catch (err) {
    probes.push(probe('settings', false, true, errorText(err)));
  }
  const uid = parsed ?? { ENVRUN_SANDBOX_UID: DEFAULT_SANDBOX_HOST_ID, ENVRUN_SANDBOX_GID: DEFAULT_SANDBOX_HOST_ID };
  probes.push(...sandboxProbes(uid, bubblewrapEnabled()));
  let config: ClientConfig | null = null;
  try {
    if (parsed) config = clientConfigFrom(parsed, env);
  } catch (err) {
    probes.push(probe('temporal', false, true, errorText(err)));
  }
  if (config) probes.push(...(await Promise.all([temporalProbe(config, timeoutMs), storeProbe(config, timeoutMs)])));
  else if (parsed) probes.push(probe('store', false, true, 'not checked: the Temporal settings are refused'));
  else
    probes.push(
      probe('temporal', false, true, 'not checked: settings refused'),
      probe('store', false, true, 'not checked: settings refused'),
    );
  return { ok: probes.every((p) => p.status !== 'fail'), settings, unknown: unknownSettings(env), probes };
}

function human(report: DoctorReport): string {
  const lines = ['Settings (* from the environment; secrets masked)'];
  const width = Math.max(...report.settings.map((s) => s.name.length));
  let section = '';
  for (const s of report.settings) {
    if (s.section !== section) lines.push(`  ${(section = s.section)}`);
    const mark = s.source === 'environment' ? '*' : ' ';
    lines.push(`  ${mark} ${s.name.padEnd(width)}  ${s.value}${s.error ? `  REFUSED: ${s.error}` : ''}`);
  }
  if (report.unknown.length > 0) lines.push(`  not read by envrun (a typo?): ${report.unknown.join(', ')}`);
  lines.push('', 'Probes');
  const pw = Math.max(...report.probes.map((p) => p.name.length));
  for (const p of report.probes) lines.push(`  ${p.status.padEnd(4)}  ${p.name.padEnd(pw)}  ${p.detail}`);
  lines.push('', report.ok ? 'ok: every required probe passed' : 'FAILED: a required probe failed (see above)');
  return lines.join('\n');
}

export async function doctor(o: Output & { timeout: string }): Promise<void> {
  const timeout = check(durationString('must be a duration like 5s'), o.timeout, '--timeout');
  const report = await doctorReport(durationMs(timeout)!);
  print(o, report, () => human(report));
  if (!report.ok) process.exitCode = EXIT_FAILURE;
}
