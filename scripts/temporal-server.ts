// Provides the production Temporal server binaries: `temporal-server` and `temporal-sql-tool`, the same
// release as docker-compose.yml's images. Looked up in ENVRUN_TEMPORAL_SERVER / ENVRUN_TEMPORAL_SQL_TOOL,
// then on PATH, then in ~/.cache/envrun/bin; failing those, built with `go install` into that folder
// (a few minutes, once). Prints what it does; fails naming every way to get them.
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { cacheBinDir, executable, onPath } from './temporal-cli.js';

export const TEMPORAL_SERVER_VERSION = '1.29.1';
const MODULE = 'go.temporal.io/server';
/** The packages `go install` builds, and the names the binaries get in the cache. */
const PACKAGES = [
  { pkg: `${MODULE}/cmd/server`, built: 'server', name: 'temporal-server', env: 'ENVRUN_TEMPORAL_SERVER' },
  { pkg: `${MODULE}/cmd/tools/sql`, built: 'sql', name: 'temporal-sql-tool', env: 'ENVRUN_TEMPORAL_SQL_TOOL' },
] as const;

export interface TemporalServerBinaries {
  server: string;
  sqlTool: string;
}

/** The version a binary reports (`temporal version 1.29.1`), or null when it does not run. */
function versionOf(path: string): string | null {
  const res = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 20_000 });
  if (res.status !== 0) return null;
  return /version\s+(\S+)/.exec(res.stdout)?.[1] ?? null;
}

export const INSTALL_HELP = [
  `The Temporal server ${TEMPORAL_SERVER_VERSION} (temporal-server and temporal-sql-tool) is needed. Get it one of these ways:`,
  `  - with Go (>= 1.25):  GOBIN=${cacheBinDir()} go install ${MODULE}/cmd/server@v${TEMPORAL_SERVER_VERSION} ${MODULE}/cmd/tools/sql@v${TEMPORAL_SERVER_VERSION}`,
  `                        then rename server to temporal-server and sql to temporal-sql-tool`,
  '  - put temporal-server and temporal-sql-tool on PATH (e.g. from the temporalio/server and',
  '    temporalio/admin-tools images, /usr/local/bin)',
  '  - or point ENVRUN_TEMPORAL_SERVER and ENVRUN_TEMPORAL_SQL_TOOL at existing binaries.',
].join('\n');

function findGo(): string | null {
  return onPath('go') ?? (executable('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : null);
}

/** Finds both binaries, or builds the missing ones with `go install` into the cache folder. */
export async function ensureTemporalServer(
  log: (line: string) => void = (l) => console.error(l),
): Promise<TemporalServerBinaries> {
  const found = new Map<string, string>();
  const missing: Array<(typeof PACKAGES)[number]> = [];
  for (const p of PACKAGES) {
    const explicit = process.env[p.env];
    if (explicit) {
      if (!versionOf(explicit)) throw new Error(`${p.env}=${explicit} does not run.\n${INSTALL_HELP}`);
      found.set(p.name, explicit);
      continue;
    }
    const path = onPath(p.name);
    if (path && versionOf(path)) {
      found.set(p.name, path);
      continue;
    }
    const cached = join(cacheBinDir(), p.name);
    if (executable(cached) && versionOf(cached) === TEMPORAL_SERVER_VERSION) {
      found.set(p.name, cached);
      continue;
    }
    missing.push(p);
  }
  if (missing.length > 0) {
    const go = findGo();
    if (!go)
      throw new Error(
        `No ${missing.map((p) => p.name).join(' or ')} found (not on PATH, not in ${cacheBinDir()}) and no Go toolchain to build them.\n${INSTALL_HELP}`,
      );
    mkdirSync(cacheBinDir(), { recursive: true });
    // A private GOBIN first, then a rename: a concurrent build or an interrupted one never leaves a
    // half-written binary under the final name.
    const staging = mkdtempSync(join(cacheBinDir(), '.go-install-'));
    const targets = missing.map((p) => `${p.pkg}@v${TEMPORAL_SERVER_VERSION}`);
    log(
      `[envrun] building the Temporal server: go install ${targets.join(' ')} into ${cacheBinDir()} (a few minutes, once)`,
    );
    const started = Date.now();
    try {
      await promisify(execFile)(go, ['install', ...targets], {
        env: { ...process.env, GOBIN: staging, CGO_ENABLED: process.env.CGO_ENABLED ?? '0' },
        maxBuffer: 64 * 1024 * 1024,
      });
      for (const p of missing) renameSync(join(staging, p.built), join(cacheBinDir(), p.name));
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(
        `go install ${targets.join(' ')} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n')}\n${INSTALL_HELP}`,
      );
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
    for (const p of missing) {
      const built = join(cacheBinDir(), p.name);
      if (!versionOf(built)) throw new Error(`go install finished but ${built} does not run.\n${INSTALL_HELP}`);
      found.set(p.name, built);
    }
    log(`[envrun] built the Temporal server in ${Math.round((Date.now() - started) / 1000)} s: ${cacheBinDir()}`);
  }
  const binaries = { server: found.get('temporal-server')!, sqlTool: found.get('temporal-sql-tool')! };
  for (const path of Object.values(binaries)) {
    const version = versionOf(path);
    if (version !== TEMPORAL_SERVER_VERSION)
      log(`[envrun] note: ${path} is version ${version}, docker-compose.yml pins ${TEMPORAL_SERVER_VERSION}`);
  }
  return binaries;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  ensureTemporalServer()
    .then((b) => console.log(`${b.server}\n${b.sqlTool}`))
    .catch((err: unknown) => {
      console.error((err as Error).message);
      process.exit(1);
    });
}
